"""Paths and sample inputs shared by the tests."""

from __future__ import annotations

from pathlib import Path

from llm2vec_hf.encoding.inputs import count_inputs, iter_inputs

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

#: Inputs that exercise the encoding rules: plain, instruction pairs, unicode, very short, over-long.
SAMPLE_INPUTS = [
    "The quick brown fox jumps over the lazy dog.",
    ["Given a web search query, retrieve relevant passages", "how do transformers attend to tokens?"],
    "Ünïcödé naïve café — 日本語のテキスト 😀",
    "a",
    ["Retrieve the definition", "x"],
    " ".join(["Long documents are cut word-wise before they are truncated to max_length."] * 60),
]
SAMPLE_PROMPTS = {"query": "Given a web search query, retrieve relevant passages "}


def read_inputs(path: str) -> list:
    """Every input of a ``.txt``/``.jsonl`` file as ``encode`` reads it (the same checks; none: an error)."""
    count_inputs(path)
    return [item for item, _, _ in iter_inputs(path)]
