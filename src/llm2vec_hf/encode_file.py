"""``llm2vec-hf encode``: a file of texts in, a ``.npy`` of float32 vectors out (row i = input i)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import LLM2VecError
from .llm2vec import LLM2Vec
from .loading import resolve_local


def read_inputs(path: str) -> list[str | list[str]]:
    """Reads ``.txt`` (one text per line) or ``.jsonl`` (``text``, optional ``instruction``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise LLM2VecError(f"{path}: input must be .txt (one text per line) or .jsonl, not {suffix or 'no suffix'}")
    if not os.path.isfile(path):
        raise LLM2VecError(f"{path}: no such file")
    items: list[str | list[str]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if suffix == ".txt":
                if not line.strip():
                    raise LLM2VecError(f"{path}:{number}: empty line; every line must be a text")
                items.append(line)
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise LLM2VecError(f"{path}:{number}: malformed JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise LLM2VecError(f"{path}:{number}: each record needs a string field 'text'")
            instruction = record.get("instruction") or ""
            if not isinstance(instruction, str):
                raise LLM2VecError(f"{path}:{number}: 'instruction' must be a string")
            items.append([instruction, record["text"]] if instruction else record["text"])
    if not items:
        raise LLM2VecError(f"{path}: no texts to encode")
    return items


def named_prompt(model_path: str, prompt_name: str) -> str:
    config_file = os.path.join(model_path, "config_sentence_transformers.json")
    prompts = {}
    if os.path.isfile(config_file):
        with open(config_file) as handle:
            prompts = json.load(handle).get("prompts", {})
    if prompt_name not in prompts:
        raise LLM2VecError(f"{model_path} has no prompt named {prompt_name!r}; it has: {', '.join(prompts) or 'none'}")
    return prompts[prompt_name]


def encode_file(model: str, input_path: str, output_path: str, prompt_name: str | None = None,
                batch_size: int = 32, device: str | None = None) -> int:
    if not output_path.endswith(".npy"):
        raise LLM2VecError(f"{output_path}: output must be a .npy file")
    items = read_inputs(input_path)
    model_path = resolve_local(model)
    if prompt_name:
        instruction = named_prompt(model_path, prompt_name)
        if instruction:
            items = [item if isinstance(item, list) else [instruction, item] for item in items]
    encoder = LLM2Vec.from_pretrained(model_path)
    vectors = encoder.encode(items, batch_size=batch_size, show_progress_bar=True, convert_to_numpy=True, device=device)
    partial = output_path + ".partial.npy"
    np.save(partial, vectors.astype(np.float32))
    os.replace(partial, output_path)
    return len(vectors)


def add_arguments(parser) -> None:
    parser.add_argument("model", help="exported checkpoint: folder or Hub repo id")
    parser.add_argument("--input", required=True, help=".txt (a text per line) or .jsonl (text, optional instruction)")
    parser.add_argument("--output", required=True, help=".npy file to write (row i = input i)")
    parser.add_argument("--prompt-name", help="named prompt of the checkpoint, used as the instruction")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", help="torch device (default: cpu)")


def main(args) -> int:
    count = encode_file(args.model, args.input, args.output, args.prompt_name, args.batch_size, args.device)
    print(f"Wrote {count} vectors to {args.output}")
    return 0
