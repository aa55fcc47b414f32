"""Everything the tiny recipes (src/llm2vec_hf/demo/recipes/) need, built offline: a random tiny base and English training data.

    python -m llm2vec_hf.commands.tiny_data runs/tiny [--family llama]

writes ``runs/tiny/base`` (a random tiny decoder, hidden 32, 2 layers, with a BPE tokenizer trained on the spot),
``runs/tiny/corpus.txt`` (one paragraph of CPython's documentation prose per line, for MNTP and SimCSE) and
``runs/tiny/supervised.jsonl`` (retrieval records derived from the same prose, two "datasets" with their own
instructions and one hard negative each). Nothing is downloaded; the text ships with CPython (pydoc_data).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from ..loading.json_files import write_jsonl
from .tiny_model import build_tiny_decoder, english_corpus

INSTRUCTIONS = {
    "first-sentence": "Given the first sentence of a paragraph, retrieve the rest of the paragraph",
    "topic": "Given the name of a Python documentation topic, retrieve a paragraph about it",
}


def supervised_records(seed: int = 0) -> list[dict]:
    """Two small retrieval datasets from CPython's documentation topics.

    * first-sentence: query = a paragraph's first sentence, positive = the rest, negative = the rest of another.
    * topic: query = the topic's title, positive = one of its paragraphs, negative = a paragraph of another topic
      (one record per topic).
    """
    from pydoc_data.topics import topics

    rng = random.Random(seed)
    records = []
    rests = []
    for paragraph in english_corpus():
        sentences = re.split(r"(?<=[.!?])\s+", paragraph)
        if len(sentences) >= 2 and len(sentences[0].split()) >= 4:
            rests.append((sentences[0], " ".join(sentences[1:])))
    for i, (first, rest) in enumerate(rests):
        other = rests[(i + 1 + rng.randrange(len(rests) - 1)) % len(rests)][1]
        records.append({"query": first, "positive": rest, "negative": other,
                        "instruction": INSTRUCTIONS["first-sentence"], "dataset": "first-sentence"})
    by_topic = {}
    for text in topics.values():
        title = text.split("\n", 1)[0].strip()
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)[1:]]
        paragraphs = [p for p in paragraphs if len(p.split()) >= 8 and not set(p) <= set("*=-~ ")]
        if title and paragraphs:
            by_topic[title] = paragraphs
    titles = sorted(by_topic)
    for title in titles:  # one record per title: a repeated query in a batch would make its positives negatives
        other_title = rng.choice([t for t in titles if t != title])
        records.append({"query": title, "positive": rng.choice(by_topic[title]),
                        "negative": rng.choice(by_topic[other_title]),
                        "instruction": INSTRUCTIONS["topic"], "dataset": "topic"})
    rng.shuffle(records)
    return records


def prepare_tiny(folder: str | Path, family: str = "llama", seed: int = 0) -> dict[str, Path]:
    """Writes base/, corpus.txt and supervised.jsonl into ``folder`` (kept if already there); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"base": folder / "base", "corpus": folder / "corpus.txt", "supervised": folder / "supervised.jsonl"}
    if not (paths["base"] / "config.json").is_file():
        build_tiny_decoder(paths["base"], family, seed=seed)
    if not paths["corpus"].is_file():
        paths["corpus"].write_text("\n".join(english_corpus()) + "\n")
    if not paths["supervised"].is_file():
        write_jsonl(paths["supervised"], supervised_records(seed), ensure_ascii=False)
    return paths
