"""Reading and writing the JSON and JSON-lines files the project keeps (progress records, summaries, results)."""

from __future__ import annotations

import json
import os
from typing import Any, Iterable


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_json(path: str | os.PathLike, data: Any, *, atomic: bool = False, **dump_options) -> None:
    """Writes ``data`` (``json.dumps`` options such as ``indent``) and a final newline.

    ``atomic``: written under a temporary name, flushed to disk, then renamed over ``path``, so a reader (or a
    run killed midway) sees the old file or the new one, never a part.
    """
    text = json.dumps(data, **dump_options) + "\n"
    if not atomic:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return
    staging = f"{os.fspath(path)}.tmp"
    with open(staging, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """The records of a JSON-lines file; blank lines are skipped."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: str | os.PathLike, records: Iterable[Any], **dump_options) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, **dump_options) + "\n" for record in records)
