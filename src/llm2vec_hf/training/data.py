"""Training data: reading texts and supervised records, checking them before training, and batching by dataset.

Everything here runs before the first training step, so that bad input (a missing or empty file, a malformed
JSONL line, a record without ``query`` or ``positive``) stops the run with a message that names the problem.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Iterator

import torch

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Training data that cannot be used; the message names the file and, where it applies, the line."""


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError(f"Data file not found: {path}")
    if not os.path.isfile(path):
        raise DataError(f"Data file {path} is not a regular file")
    if os.path.getsize(path) == 0:
        raise DataError(f"Data file {path} is empty")


def _iter_jsonl(path: str) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


def read_texts(path: str, text_column: str = "text", max_samples: int | None = None) -> list[str]:
    """Texts from a .txt (one per non-empty line) or .jsonl/.json-lines file (``text_column`` of each record)."""
    _check_file(path)
    texts: list[str] = []
    if path.endswith((".jsonl", ".json")):
        for number, record in _iter_jsonl(path):
            value = record.get(text_column)
            if not isinstance(value, str):
                raise DataError(f"{path}, line {number}: no string field {text_column!r}")
            if value.strip():
                texts.append(value.strip())
            if max_samples and len(texts) >= max_samples:
                break
    else:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    texts.append(line.strip())
                if max_samples and len(texts) >= max_samples:
                    break
    if not texts:
        raise DataError(f"Data file {path} holds no text")
    return texts


def read_raw_texts(path: str, text_column: str = "text") -> list[str]:
    """Every text of a file exactly as the official run_mntp.py's ``datasets`` loaders give it: for .txt each
    line without its line break, empty lines included (the MNTP grouping gives each its BOS); for .jsonl the
    ``text_column`` of every record, unstripped."""
    _check_file(path)
    if path.endswith((".jsonl", ".json")):
        texts = []
        for number, record in _iter_jsonl(path):
            value = record.get(text_column)
            if not isinstance(value, str):
                raise DataError(f"{path}, line {number}: no string field {text_column!r}")
            texts.append(value)
    else:
        with open(path, encoding="utf-8") as handle:  # text mode: universal newlines, split on "\n" only
            texts = [line[:-1] if line.endswith("\n") else line for line in handle]
    if not any(t.strip() for t in texts):
        raise DataError(f"Data file {path} holds no text")
    return texts


def load_hub_texts(name: str, config_name: str | None, split: str, text_column: str, max_samples: int | None,
                   keep_empty: bool = False):
    """Texts of one split of a ``datasets`` dataset (cached or downloaded); empty lines dropped and texts
    stripped, unless ``keep_empty`` (MNTP reads them as the official script does)."""
    import datasets

    try:
        dataset = datasets.load_dataset(name, config_name, split=split)
    except Exception as error:  # datasets raises many types (offline, missing split, missing config)
        raise DataError(
            f"Could not load dataset {name!r}" + (f" ({config_name})" if config_name else "") + f", split {split!r}: "
            f"{type(error).__name__}: {error}. Offline, point train_file at a local text file instead."
        ) from None
    if text_column not in dataset.column_names:
        raise DataError(f"Dataset {name!r} has no column {text_column!r}; its columns: {dataset.column_names}")
    if keep_empty:
        texts = [t for t in dataset[text_column] if isinstance(t, str)]
    else:
        texts = [t.strip() for t in dataset[text_column] if isinstance(t, str) and t.strip()]
    if max_samples:
        texts = texts[:max_samples]
    if not texts:
        raise DataError(f"Dataset {name!r}, split {split!r} holds no text")
    return texts


@dataclass
class SupervisedRecord:
    query: str
    positive: str
    negatives: list[str]
    instruction: str
    dataset: str
    document_instruction: str = ""


def read_supervised(path: str, max_samples: int | None = None) -> list[SupervisedRecord]:
    """Reads ``{query, positive, negative (one or a list), instruction, dataset}`` records from JSONL.

    An optional ``document_instruction`` is given to the positive and the negatives too. The official E5 recipe
    gives documents none: its loader's branch for that tests for dataset names the E5 mix does not have."""
    _check_file(path)
    records = []
    for number, record in _iter_jsonl(path):
        for key in ("query", "positive"):
            value = record.get(key)
            if not isinstance(value, str) or not value.strip():
                problem = "has no" if key not in record else "has an empty or non-string"
                raise DataError(f"{path}, line {number}: record {problem} {key!r}")
        negatives = record.get("negative", record.get("negatives", []))
        if isinstance(negatives, str):
            negatives = [negatives]
        if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
            raise DataError(f"{path}, line {number}: 'negative' must be a text or a list of non-empty texts")
        instruction = record.get("instruction") or ""
        dataset = record.get("dataset") or "default"
        document_instruction = record.get("document_instruction") or ""
        if not all(isinstance(v, str) for v in (instruction, dataset, document_instruction)):
            raise DataError(f"{path}, line {number}: 'instruction', 'document_instruction' and 'dataset' must be strings")
        records.append(SupervisedRecord(record["query"], record["positive"], negatives, instruction, dataset,
                                        document_instruction))
        if max_samples and len(records) >= max_samples:
            break
    if not records:
        raise DataError(f"Data file {path} holds no records")
    return records


def supervised_columns(
    records: list[SupervisedRecord], num_hard_negatives: int | None, path: str = "train_file"
) -> tuple[dict[str, list], list[str], int]:
    """Columns for sentence-transformers (query as an ``[instruction, text]`` pair), the dataset of each row,
    and the number of hard negatives used."""
    fewest = min(len(r.negatives) for r in records)
    if num_hard_negatives is None:
        num_hard_negatives = fewest
        if fewest == 0 and any(r.negatives for r in records):
            logger.warning("Some records have no negative: training without hard negatives (in-batch only)")
    elif fewest < num_hard_negatives:
        short = next(i for i, r in enumerate(records) if len(r.negatives) < num_hard_negatives)
        raise DataError(
            f"{path}: record #{short + 1} has {len(records[short].negatives)} negative(s), "
            f"but num_hard_negatives is {num_hard_negatives}"
        )
    if any(r.document_instruction for r in records):
        def document(r, text):  # an empty instruction reads exactly as a plain text
            return [r.document_instruction, text]
    else:
        def document(r, text):
            return text
    columns: dict[str, list] = {"query": [[r.instruction, r.query] for r in records],
                                "positive": [document(r, r.positive) for r in records]}
    for i in range(num_hard_negatives):
        columns[f"negative_{i + 1}"] = [document(r, r.negatives[i]) for r in records]
    return columns, [r.dataset for r in records], num_hard_negatives


class GroupedBatchSampler(torch.utils.data.Sampler):
    """Batches whose rows all come from one group (dataset), sized for the *global* batch under DDP.

    Each group's rows are shuffled, cut into global batches of ``batch_size * world_size`` rows, the global batches
    of all groups are shuffled together, and each is yielded as ``world_size`` consecutive per-device chunks.
    Accelerate hands chunk ``k`` of every global batch to rank ``k`` (batch ``i`` goes to rank ``i % world_size``),
    so with negatives gathered across devices one optimizer step sees exactly the rows a single process with
    ``batch_size * world_size`` rows per batch would see. Incomplete global batches are dropped (as the reference
    does), so no batch mixes datasets and every rank gets the same number of batches.
    """

    def __init__(self, groups: list[str], batch_size: int, world_size: int = 1, seed: int = 0,
                 drop_last: bool = True):
        self.groups, self.batch_size, self.world_size, self.seed = list(groups), batch_size, world_size, seed
        # SimCSE keeps its last, smaller batch on one device, as the official Trainer's default sampler does (its
        # epoch length, hence its learning-rate schedule, counts it); across devices it is dropped.
        self.drop_last = drop_last or world_size > 1 or len(set(self.groups)) > 1
        self.epoch = 0
        global_size = batch_size * world_size
        counts: dict[str, int] = {}
        for group in self.groups:
            counts[group] = counts.get(group, 0) + 1
        usable = {g: n // global_size for g, n in counts.items()}
        if self.drop_last and sum(usable.values()) == 0:
            raise DataError(
                f"No dataset has enough rows for one global batch of {global_size} "
                f"(per-device batch {batch_size} x {world_size} device(s)); largest has {max(counts.values())}"
            )
        for group, n in usable.items():
            if n == 0 and self.drop_last:
                logger.warning("Dataset %r has %d rows, fewer than one global batch (%d): skipped",
                               group, counts[group], global_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        by_group: dict[str, list[int]] = {}
        for index, group in enumerate(self.groups):
            by_group.setdefault(group, []).append(index)
        global_size = self.batch_size * self.world_size
        batches, tails = [], []
        for group in sorted(by_group):
            rows = by_group[group]
            order = torch.randperm(len(rows), generator=generator).tolist()
            shuffled = [rows[i] for i in order]
            for start in range(0, len(shuffled) - global_size + 1, global_size):
                batches.append(shuffled[start : start + global_size])
            if not self.drop_last and len(shuffled) % global_size:
                tails.append(shuffled[len(shuffled) // global_size * global_size :])
        order = torch.randperm(len(batches), generator=generator).tolist()
        # The smaller batch comes last, as in a random permutation cut into batches (the Trainer's default).
        return [batches[i] for i in order] + tails

    def __iter__(self):
        for batch in self.global_batches():
            for rank in range(self.world_size):
                yield batch[rank * self.batch_size : (rank + 1) * self.batch_size]

    def __len__(self) -> int:
        global_size = self.batch_size * self.world_size
        counts: dict[str, int] = {}
        for group in self.groups:
            counts[group] = counts.get(group, 0) + 1
        if not self.drop_last:
            return sum(math.ceil(n / global_size) for n in counts.values())
        return sum(n // global_size for n in counts.values()) * self.world_size

