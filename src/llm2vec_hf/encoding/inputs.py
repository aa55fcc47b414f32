"""What ``encode`` reads, and what a partial output was made from.

Inputs: ``.txt`` (one text per line) or ``.jsonl`` (``text``, optional ``instruction``), read one line at a time
with the line number of every error. Fingerprints: the input file (path, size, mtime, hash of its first and last
MiB) and the checkpoint (its config files, weight files' sizes and mtimes), which a resumed run must match.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator

from ..errors import LLM2VecError
from ..loading.json_files import read_json
from ..modeling.input_formatting import check_separator

UTF8_BOM = b"\xef\xbb\xbf"
#: The keys of a .jsonl record.
RECORD_KEYS = ("text", "instruction")
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


def parse_line(path: str, suffix: str, number: int, raw: bytes, ids: dict | None = None) -> str | list[str] | None:
    """One input line -> a text, an ``[instruction, text]`` pair, or None (a blank .jsonl line, skipped).

    ``ids`` (a .jsonl read for an output with id columns, ``encode --engine ray``): its keys are the record's other
    keys, which every record must carry; their values are filled in, as text (JSON text unless a string). Without
    it a key other than ``text`` and ``instruction`` is refused: it would be dropped without a word."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LLM2VecError(f"{path}:{number}: not UTF-8 ({error.reason} at byte {error.start})") from None
    line = line.removesuffix("\n").removesuffix("\r")
    if suffix == ".txt":
        if not line.strip():
            raise LLM2VecError(f"{path}:{number}: empty line; every line must be a text")
        try:
            check_separator("", line, f"{path}:{number}")
        except ValueError as error:
            raise LLM2VecError(str(error)) from None
        return line
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise LLM2VecError(f"{path}:{number}: malformed JSON ({error.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise LLM2VecError(f"{path}:{number}: each record needs a string field 'text'")
    unknown = sorted(set(record) - set(RECORD_KEYS) - set(ids or ()))
    if unknown:
        hints = [f"{key!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(key, RECORD_KEYS, 1))
                               else "") for key in unknown]
        carried = (f"; id keys are those of the first record: {', '.join(ids)}" if ids is not None
                   else " (--engine ray carries other keys into its output as id columns)")
        raise LLM2VecError(f"{path}:{number}: unknown key(s) {', '.join(hints)}; a record holds 'text' and an "
                           f"optional 'instruction'{carried}")
    for key in ids or ():
        if key not in record:
            raise LLM2VecError(f"{path}:{number}: no {key!r}; every record carries the id keys of the first one "
                               f"({', '.join(ids)})")
        ids[key] = record[key] if isinstance(record[key], str) else json.dumps(record[key], ensure_ascii=False)
    for key in RECORD_KEYS:
        if isinstance(record.get(key), str) and not _is_unicode_text(record[key]):
            raise LLM2VecError(f"{path}:{number}: {key!r} holds a lone surrogate escape (such as \\ud800), "
                               "which is not Unicode text")
    if not record["text"].strip():
        raise LLM2VecError(f"{path}:{number}: 'text' is empty; there is nothing to embed")
    instruction = record.get("instruction", "")
    if not isinstance(instruction, str):  # 0, false, null and lists alike: only a string is an instruction
        raise LLM2VecError(f"{path}:{number}: 'instruction' must be a string, got {json.dumps(instruction)[:40]}")
    try:
        check_separator(instruction, record["text"], f"{path}:{number}")
    except ValueError as error:
        raise LLM2VecError(str(error)) from None
    return [instruction, record["text"]] if instruction else record["text"]


def _is_unicode_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: A line and its ending: ``\n``, ``\r\n`` or a lone ``\r``, the endings Python's text mode reads.
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)")
_READ_BYTES = 1 << 20


def split_lines(data: bytes) -> list[bytes]:
    """``data`` cut into lines, each with its ending (the last one may have none), as Python reads text."""
    lines = [match.group() for match in _LINE.finditer(data)]
    rest = data[sum(len(line) for line in lines):]
    return lines + ([rest] if rest else [])


def raw_lines(handle) -> Iterator[bytes]:
    """The lines of a binary file from its current position, each with its ending (`split_lines`)."""
    pending = b""
    while True:
        block = handle.read(_READ_BYTES)
        data = pending + block
        if not block:
            if data:
                yield data
            return
        end = 0
        for match in _LINE.finditer(data):
            if match.end() == len(data) and data.endswith(b"\r"):
                break  # perhaps the first half of a \r\n that the next block completes
            yield match.group()
            end = match.end()
        pending = data[end:]


def iter_inputs(path: str, offset: int = 0, number: int = 1) -> Iterator[tuple[str | list[str], int, int]]:
    """Yields ``(item, offset after its line, number of the next line)`` from byte ``offset`` on."""
    suffix = input_suffix(path)
    with open(path, "rb") as handle:
        handle.seek(offset)
        for raw in raw_lines(handle):
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


def jsonl_id_keys(path: str) -> list[str]:
    """The keys of the first record of a .jsonl file other than ``text`` and ``instruction``, in its order."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(raw_lines(handle), start=1):
            raw = raw[len(UTF8_BOM):] if number == 1 and raw.startswith(UTF8_BOM) else raw
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return []  # the shard reader names the line
            if not isinstance(record, dict):
                return []
            keys = [key for key in record if key not in RECORD_KEYS]
            for key in keys:  # a misspelled "instruction" carried as an id would drop the instruction silently
                close = difflib.get_close_matches(key, RECORD_KEYS, 1, cutoff=0.75)
                if close:
                    raise LLM2VecError(f"{path}:{number}: unknown key {key!r} (did you mean {close[0]!r}?); a record "
                                       "holds 'text', an optional 'instruction', and id keys")
            return keys
    return []


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
