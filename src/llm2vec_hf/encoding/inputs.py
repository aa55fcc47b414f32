"""What ``encode`` reads, and what a partial output was made from.

Inputs: ``.txt`` (one text per line) or ``.jsonl`` (``text``, optional ``instruction``), read one line at a time
with the line number of every error. Fingerprints: the input file (path, size, mtime, hash of its first and last
MiB) and the checkpoint (its config files, weight files' sizes and mtimes), which a resumed run must match.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from ..errors import LLM2VecError
from ..loading.json_files import read_json

UTF8_BOM = b"\xef\xbb\xbf"
_FINGERPRINT_BYTES = 1 << 20
_MODEL_FILES = (
    "config.json",
    "llm2vec_config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
)


def input_suffix(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise LLM2VecError(f"{path}: input must be .txt (one text per line) or .jsonl, not {suffix or 'no suffix'}")
    if not os.path.isfile(path):
        raise LLM2VecError(f"{path}: no such file")
    return suffix


def parse_line(path: str, suffix: str, number: int, raw: bytes) -> str | list[str] | None:
    """One input line -> a text, an ``[instruction, text]`` pair, or None (a blank .jsonl line, skipped)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LLM2VecError(f"{path}:{number}: not UTF-8 ({error.reason} at byte {error.start})") from None
    line = line.rstrip("\n")
    if line.endswith("\r"):
        line = line[:-1]
    if suffix == ".txt":
        if not line.strip():
            raise LLM2VecError(f"{path}:{number}: empty line; every line must be a text")
        return line
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise LLM2VecError(f"{path}:{number}: malformed JSON ({error.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise LLM2VecError(f"{path}:{number}: each record needs a string field 'text'")
    if not record["text"].strip():
        raise LLM2VecError(f"{path}:{number}: 'text' is empty; there is nothing to embed")
    instruction = record.get("instruction", "")
    if not isinstance(instruction, str):  # 0, false, null and lists alike: only a string is an instruction
        raise LLM2VecError(f"{path}:{number}: 'instruction' must be a string, got {json.dumps(instruction)[:40]}")
    return [instruction, record["text"]] if instruction else record["text"]


def iter_inputs(path: str, offset: int = 0, number: int = 1) -> Iterator[tuple[str | list[str], int, int]]:
    """Yields ``(item, offset after its line, number of the next line)`` from byte ``offset`` on."""
    suffix = input_suffix(path)
    with open(path, "rb") as handle:
        handle.seek(offset)
        for raw in handle:
            start = offset
            offset += len(raw)
            if start == 0 and raw.startswith(UTF8_BOM):
                # A byte-order mark (Windows editors write one) marks the encoding and is never part of the text:
                # stripped from .txt and .jsonl alike.
                raw = raw[len(UTF8_BOM):]
            item = parse_line(path, suffix, number, raw)
            number += 1
            if item is not None:
                yield item, offset, number


def count_inputs(path: str) -> int:
    """Checks every line and counts the texts, keeping none of them."""
    count = sum(1 for _ in iter_inputs(path))
    if not count:
        raise LLM2VecError(f"{path}: no texts to encode")
    return count


def named_prompt(model_path: str, prompt_name: str) -> str:
    config_file = os.path.join(model_path, "config_sentence_transformers.json")
    prompts = {}
    if os.path.isfile(config_file):
        prompts = read_json(config_file).get("prompts", {})
    if prompt_name not in prompts:
        raise LLM2VecError(f"{model_path} has no prompt named {prompt_name!r}; it has: {', '.join(prompts) or 'none'}")
    return prompts[prompt_name]


def input_fingerprint(path: str) -> dict:
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_FINGERPRINT_BYTES))
        if stat.st_size > _FINGERPRINT_BYTES:
            handle.seek(max(_FINGERPRINT_BYTES, stat.st_size - _FINGERPRINT_BYTES))
            digest.update(handle.read())
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256_head_tail": digest.hexdigest()}


def model_fingerprint(model_path: str) -> dict:
    """Hashes the checkpoint's config and tokenizer files; weights by name, size and mtime (a 7B model is not
    re-read for this)."""
    digest = hashlib.sha256()
    for name in _MODEL_FILES:
        file = os.path.join(model_path, name)
        if os.path.isfile(file):
            digest.update(name.encode())
            with open(file, "rb") as handle:
                digest.update(handle.read())
    weights = []
    for file in sorted(Path(model_path).glob("*.safetensors")):
        stat = file.stat()
        weights.append([file.name, stat.st_size, stat.st_mtime_ns])
    return {"path": os.path.abspath(model_path), "files_sha256": digest.hexdigest(), "weights": weights}


def describe_mismatch(old: dict, new: dict) -> str:
    changed = [key for key in new if old.get(key) != new[key]]
    return ", ".join(changed) or "format"
