"""``llm2vec-hf encode --engine ray``: a corpus on a Ray cluster -> Parquet shards of vectors and a manifest.

Data flows input -> Ray Data blocks (one per shard) -> encoder actors -> ``DIR/shard-<key>.parquet`` ->
``DIR/manifest.json``:

- The input is a ``.txt``/``.jsonl`` file (read with `encoding.inputs`' line reader, so the same rules and error
  messages apply; every line is identified by its 1-based ``line``) or Parquet (a file or a folder of
  ``*.parquet``: a ``text`` column, an optional ``instruction`` column; every other column is carried through as
  an id, and each row gets its 0-based ``row``). A ``ray.data.Dataset`` goes in through `encode_dataset`.
- The driver only plans shards (byte ranges of ``--chunk-size`` lines, or row ranges of Parquet row groups);
  Ray tasks read them, so no text passes through the driver.
- Workers are actors (``map_batches`` with a callable class): each loads the checkpoint once and encodes its
  shards through `LLM2Vec.encode` (the in-process path: token-budget batching, LLM2Vec pooling), then writes the
  shard under a temporary name and renames it, so a shard file that exists is complete.
- A shard's name is a hash of the checkpoint fingerprint and the shard's ids, instructions and texts. A rerun
  finds the shards that are already there and does not encode them again; a killed run loses at most the shards
  that were in flight. A bad row fails the run with one line naming it (file and line, or row and ids); shards
  already written stay and are reused by the next run.
- ``manifest.json`` is written last: the checkpoint and input fingerprints, the instruction, the dimension, and
  the shards in input order with their row counts. A folder with a manifest is complete;
  `read_vectors` reads it back in input order.

Ray is an optional dependency: ``pip install "llm2vec-hf[ray]"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LLM2VecError
from ..loading.json_files import read_json, write_json
from ..loading.paths import resolve_local
from ..output_paths import refuse_overlap
from . import DEFAULT_CHUNK_SIZE
from .compile_policy import CHARS_PER_TOKEN
from .encoders import InProcessEncoder, check_positive_options
from .inputs import (
    input_fingerprint,
    input_suffix,
    jsonl_id_keys,
    model_fingerprint,
    named_prompt,
    parse_line,
    split_lines,
)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
SHARD_PREFIX = "shard-"
VECTOR_COLUMN = "vector"
SCAN_BYTES = 64 << 20


def _require_ray():
    try:
        import ray  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as error:
        raise LLM2VecError(
            f"--engine ray needs Ray Data ({error.name} is not installed): pip install 'llm2vec-hf[ray]'"
        ) from None
    return ray


# ---------------------------------------------------------------------------------------------------------------
# Planning shards (driver) and reading them (Ray tasks)
# ---------------------------------------------------------------------------------------------------------------


def plan_text_shards(path: str, lines_per_shard: int) -> list[dict]:
    """Byte ranges of ``lines_per_shard`` lines each, from one pass that counts line endings (no parsing): ``\n``,
    ``\r\n`` and a lone ``\r``, as encode's reader (`split_lines`) and Python's text mode read them."""
    shards, start, line, lines_in_shard, position = [], 0, 1, 0, 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(SCAN_BYTES)
            if not chunk:
                break
            following = handle.read(1)  # whether a \r at the end of the chunk starts a \r\n
            handle.seek(-len(following), os.SEEK_CUR)
            data = np.frombuffer(chunk, dtype=np.uint8)
            next_bytes = np.append(data[1:], np.frombuffer(following or b"\0", dtype=np.uint8))
            ends = np.flatnonzero((data == 10) | ((data == 13) & (next_bytes != 10))) + position + 1
            position += len(chunk)
            # Shard boundaries fall after every lines_per_shard-th newline, counting from the current shard.
            for end in ends[lines_per_shard - lines_in_shard - 1 :: lines_per_shard]:
                shards.append({"path": path, "start": start, "stop": int(end), "first_line": line})
                line += lines_per_shard
                start = int(end)
            lines_in_shard = int((lines_in_shard + len(ends)) % lines_per_shard)
    if position > start:
        shards.append({"path": path, "start": start, "stop": position, "first_line": line})
    return shards


def read_text_shard(batch: dict) -> dict:
    """One planned byte range of a .txt/.jsonl file -> its rows (``line``, ``text``, ``instruction``, and a
    .jsonl's id keys, ``id_keys`` in the plan: `parse_line`)."""
    path, start, stop, number = (batch[key][0] for key in ("path", "start", "stop", "first_line"))
    path, number = str(path), int(number)
    id_keys = json.loads(str(batch["id_keys"][0])) if "id_keys" in batch else []
    suffix = input_suffix(path)
    with open(path, "rb") as handle:
        handle.seek(int(start))
        data = handle.read(int(stop) - int(start))
    lines, texts, instructions = [], [], []
    ids: dict[str, list] = {key: [] for key in id_keys}
    for raw in split_lines(data):
        row_ids = dict.fromkeys(id_keys) if suffix == ".jsonl" else None
        item = parse_line(path, suffix, number, raw, row_ids)
        if item is not None:
            instruction, text = item if isinstance(item, list) else ("", item)
            lines.append(number)
            texts.append(text)
            instructions.append(instruction)
            for key in id_keys:
                ids[key].append(row_ids[key])
        number += 1
    return {"line": np.asarray(lines, dtype=np.int64), "text": np.asarray(texts, dtype=object),
            "instruction": np.asarray(instructions, dtype=object),
            **{key: np.asarray(values, dtype=object) for key, values in ids.items()}}


def _parquet_files(path: str) -> list[str]:
    if os.path.isdir(path):
        files = sorted(str(p) for p in Path(path).glob("*.parquet"))
        if not files:
            raise LLM2VecError(f"{path}: no .parquet files in this folder")
        return files
    if not os.path.isfile(path):
        raise LLM2VecError(f"{path}: no such file")
    return [path]


def plan_parquet_shards(path: str, rows_per_shard: int) -> tuple[list[dict], list[str], bool]:
    """Row ranges (at most ``rows_per_shard``, within one row group) of a Parquet file or folder; also the
    carried id columns and whether there is an instruction column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards, row, schema = [], 0, None
    for file in _parquet_files(path):
        try:
            parquet = pq.ParquetFile(file)
        except (pa.ArrowInvalid, OSError) as error:
            raise LLM2VecError(f"{file}: not a readable Parquet file ({error})") from None
        file_schema = parquet.schema_arrow
        if "text" not in file_schema.names:
            raise LLM2VecError(f"{file}: no 'text' column (columns: {', '.join(file_schema.names)})")
        for name in ("text", "instruction"):
            if name in file_schema.names and not (pa.types.is_string(file_schema.field(name).type)
                                                  or pa.types.is_large_string(file_schema.field(name).type)):
                raise LLM2VecError(f"{file}: column {name!r} must hold strings, not {file_schema.field(name).type}")
        if schema is None:
            schema = file_schema
        elif set(file_schema.names) != set(schema.names):
            raise LLM2VecError(f"{file}: columns {file_schema.names} differ from those of the first file {schema.names}")
        for group in range(parquet.metadata.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            for offset in range(0, rows, rows_per_shard):
                count = min(rows_per_shard, rows - offset)
                shards.append({"path": file, "row_group": group, "offset": offset, "count": count, "first_row": row})
                row += count
    if not row:
        raise LLM2VecError(f"{path}: no rows to encode")
    if "row" in schema.names or VECTOR_COLUMN in schema.names:
        raise LLM2VecError(f"{path}: the columns 'row' and '{VECTOR_COLUMN}' are reserved for the output")
    ids = [name for name in schema.names if name not in ("text", "instruction")]
    return shards, ids, "instruction" in schema.names


def read_parquet_shard(batch: dict):
    """One planned row range of a Parquet file -> its rows, with ``row`` (0-based over all files) first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, group, offset, count, first = (batch[key][0] for key in ("path", "row_group", "offset", "count", "first_row"))
    table = pq.ParquetFile(str(path)).read_row_group(int(group)).slice(int(offset), int(count))
    return table.add_column(0, "row", pa.array(np.arange(int(first), int(first) + int(count), dtype=np.int64)))


# ---------------------------------------------------------------------------------------------------------------
# The encoder actor
# ---------------------------------------------------------------------------------------------------------------


def shard_key(model_key: str, ids: list[list], instructions: list[str], texts: list[str]) -> str:
    """What a shard's vectors depend on: the checkpoint and, row by row, the ids, instruction and text."""
    digest = hashlib.sha256(model_key.encode())
    digest.update(json.dumps([ids, instructions, texts], ensure_ascii=False, default=str).encode())
    return digest.hexdigest()[:32]


class ShardEncoder:
    """A Ray actor: loads the checkpoint once, then turns each batch (one shard) into a Parquet file.

    Returns one summary row per shard (file name, rows, dimension). A shard whose file already exists is not
    encoded again.
    """

    def __init__(self, model_path: str, model_key: str, output_dir: str, text_column: str,
                 instruction_column: str | None, instruction: str, id_columns: list[str], source: str,
                 batching: dict, device: str, threads: int | None, order_column: str | None = None,
                 compile_model: bool | None = False, tokens: int = 0):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.encoder = InProcessEncoder(model_path, batching, device, compile_model, tokens)
        self.model_key, self.output_dir, self.source = model_key, output_dir, source
        self.text_column, self.instruction_column, self.instruction = text_column, instruction_column, instruction
        self.id_columns, self.order_column = id_columns, order_column

    def _summary(self, table, name: str, rows: int, dim: int, reused: bool):
        import pyarrow as pa

        first = int(table[self.order_column][0].as_py()) if self.order_column else -1
        return pa.table({"file": [name], "rows": [rows], "dim": [dim], "reused": [reused], "first": [first]})

    def _describe(self, table, index: int) -> str:
        ids = ", ".join(f"{name}={table[name][index].as_py()!r}" for name in self.id_columns)
        return f"{self.source}: row with {ids}" if ids else f"{self.source}: row {index} of a shard"

    def __call__(self, table):
        import pyarrow as pa
        import pyarrow.parquet as pq

        texts = table[self.text_column].to_pylist()
        if not texts:  # a shard of blank .jsonl lines
            return pa.table({"file": pa.array([], pa.string()), "rows": pa.array([], pa.int64()),
                             "dim": pa.array([], pa.int64()), "reused": pa.array([], pa.bool_()),
                             "first": pa.array([], pa.int64())})
        if self.instruction_column and self.instruction_column in table.column_names:
            instructions = [value or self.instruction for value in table[self.instruction_column].to_pylist()]
        else:
            instructions = [self.instruction] * len(texts)
        for index, (text, instruction) in enumerate(zip(texts, instructions)):
            if not isinstance(text, str) or not text.strip():
                problem = "is missing" if text is None else "is empty" if isinstance(text, str) else f"is a {type(text).__name__}"
                raise LLM2VecError(f"{self._describe(table, index)}: '{self.text_column}' {problem}; there is nothing to embed")
            if not isinstance(instruction, str):
                raise LLM2VecError(f"{self._describe(table, index)}: the instruction must be a string")
        ids = [table[name].to_pylist() for name in self.id_columns]
        name = f"{SHARD_PREFIX}{shard_key(self.model_key, ids, instructions, texts)}.parquet"
        path = os.path.join(self.output_dir, name)
        if os.path.isfile(path):
            metadata = pq.read_schema(path).metadata or {}
            dim = int(metadata.get(b"dim", b"0"))
            if pq.read_metadata(path).num_rows == len(texts) and dim:
                return self._summary(table, name, len(texts), dim, reused=True)
        items = [[instruction, text] if instruction else text for text, instruction in zip(texts, instructions)]
        vectors = self.encoder(items)
        dim = int(vectors.shape[1])
        if vectors.shape[0] != len(texts) or not np.isfinite(vectors).all():
            raise LLM2VecError(f"{self.source}: the encoder returned {vectors.shape[0]} vectors for {len(texts)} "
                               "rows, or non-finite values; the shard is not written")
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        output = table.select(self.id_columns).append_column(VECTOR_COLUMN, pa.FixedSizeListArray.from_arrays(flat, dim))
        output = output.replace_schema_metadata({"dim": str(dim)})
        staging = os.path.join(self.output_dir, f".{name}.{os.getpid()}.tmp")
        pq.write_table(output, staging)
        with open(staging, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staging, path)
        return self._summary(table, name, len(texts), dim, reused=False)


# ---------------------------------------------------------------------------------------------------------------
# Running a dataset through the actors
# ---------------------------------------------------------------------------------------------------------------


def _connect(address: str | None) -> None:
    ray = _require_ray()
    if ray.is_initialized():
        return
    # Without --address or RAY_ADDRESS, ray.init starts a local cluster on this machine.
    ray.init(address=address, log_to_driver=False, include_dashboard=False if not (address or os.environ.get("RAY_ADDRESS")) else None)


def _user_error(error: BaseException) -> LLM2VecError | None:
    """The LLM2VecError that a worker raised, found in the chain of errors that Ray wraps it in."""
    seen = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, LLM2VecError):
            return current
        stack.extend([current.__cause__, current.__context__, getattr(current, "cause", None)])
    text = str(error)
    marker = "LLM2VecError: "
    if marker in text:
        return LLM2VecError(text.split(marker, 1)[1].strip().splitlines()[0])
    return None


def _read_manifest(output_dir: str) -> dict | None:
    try:
        return read_json(os.path.join(output_dir, MANIFEST))
    except (OSError, ValueError):
        return None


def run_shards(
    dataset,
    model_path: str,
    output_dir: str,
    *,
    key: dict,
    text_column: str,
    instruction_column: str | None,
    instruction: str,
    id_columns: list[str],
    source: str,
    shard_per_block: bool,
    rows_per_shard: int,
    batch_size: int,
    max_batch_tokens: int | None,
    num_workers: int | None,
    num_gpus_per_worker: float,
    num_cpus_per_worker: float,
    restart: bool,
    compile_model: bool | None = False,
    tokens: int = 0,
    overwrite: bool = False,
) -> dict:
    """Encodes ``dataset`` into shards under ``output_dir`` and writes the manifest; returns the manifest. A
    complete folder of another key (input, checkpoint, instruction) is replaced only with ``overwrite``."""
    import ray

    os.makedirs(output_dir, exist_ok=True)
    manifest_path = os.path.join(output_dir, MANIFEST)
    existing = _read_manifest(output_dir)
    if existing is not None and existing.get("key") != key and not overwrite:
        raise LLM2VecError(f"{output_dir} holds a complete output of another input, checkpoint or instruction; "
                           "pass --overwrite to replace it")
    if existing is not None and not restart and existing.get("key") == key and all(
        os.path.isfile(os.path.join(output_dir, shard["file"])) for shard in existing["shards"]
    ):
        logger.info(f"{output_dir} is already complete ({existing['rows']} rows)")
        return existing
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # the folder is being rewritten; the manifest comes back when it is complete
    for file in Path(output_dir).iterdir():
        stale_temp = file.name.startswith(f".{SHARD_PREFIX}") and file.name.endswith(".tmp")
        if stale_temp or (restart and file.name.startswith(SHARD_PREFIX)):
            file.unlink()

    if num_gpus_per_worker:
        device = "cuda"  # Ray sets CUDA_VISIBLE_DEVICES of each actor to its own GPUs
        if num_workers is None:
            num_workers = max(1, int(ray.cluster_resources().get("GPU", 0) // num_gpus_per_worker))
    else:
        device = "cpu"
        if num_workers is None:
            num_workers = max(1, int(ray.cluster_resources().get("CPU", 1) // num_cpus_per_worker))
    model_key = json.dumps(key["checkpoint"], sort_keys=True) + json.dumps(key["instruction"])
    encoded = dataset.map_batches(
        ShardEncoder,
        fn_constructor_kwargs={
            "model_path": model_path, "model_key": model_key, "output_dir": os.path.abspath(output_dir),
            "text_column": text_column, "instruction_column": instruction_column, "instruction": instruction,
            "id_columns": id_columns, "source": source,
            "batching": {"batch_size": batch_size, "max_batch_tokens": max_batch_tokens}, "device": device,
            "threads": None if num_gpus_per_worker else max(1, int(num_cpus_per_worker)),
            "order_column": id_columns[0] if shard_per_block else None,
            "compile_model": compile_model, "tokens": tokens // num_workers,  # each actor's share
        },
        batch_size=None if shard_per_block else rows_per_shard,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_gpus=num_gpus_per_worker or None,
        num_cpus=num_cpus_per_worker,
    )
    # A Dataset runs with the DataContext it was made with: summaries must come back in input order (the
    # manifest's order), so preserve_order is set on that context for this run.
    context = getattr(encoded, "context", None) or ray.data.DataContext.get_current()  # older Ray 2.x has no .context
    options = context.execution_options
    preserve_order, options.preserve_order = options.preserve_order, True
    shards, dim, reused = [], None, 0
    from tqdm.auto import tqdm

    progress = tqdm(unit="shard", desc="Encoding shards", file=sys.stderr, disable=None)
    try:
        for summary in encoded.iter_rows():
            if dim is not None and summary["dim"] != dim:
                raise LLM2VecError(f"{summary['file']} has dimension {summary['dim']}, others {dim}")
            dim = summary["dim"]
            reused += bool(summary["reused"])
            shards.append({"file": summary["file"], "rows": int(summary["rows"]), "first": int(summary["first"])})
            progress.update(1)
    except Exception as error:
        user_error = _user_error(error)
        if user_error is not None:
            raise LLM2VecError(str(user_error).strip()) from None
        raise
    finally:
        options.preserve_order = preserve_order
        progress.close()
    if not shards:
        raise LLM2VecError(f"{source}: no rows to encode")
    if shard_per_block:
        # Planned shards are disjoint ranges of lines/rows: their first ids order them whatever Ray did.
        shards.sort(key=lambda shard: shard["first"])
        firsts = [shard["first"] for shard in shards]
        if len(set(firsts)) != len(firsts):
            raise LLM2VecError(f"{source}: a shard came back twice (first ids {firsts[:20]}…); no manifest written")
    for shard in shards:
        del shard["first"]
    listed = {shard["file"] for shard in shards}
    for file in Path(output_dir).glob(f"{SHARD_PREFIX}*.parquet"):
        if file.name not in listed:
            file.unlink()  # from another input, checkpoint or sharding: not part of this result
    manifest = {
        "version": MANIFEST_VERSION,
        "key": key,
        "checkpoint": key["checkpoint"],
        "input": key["input"],
        "instruction": key["instruction"],
        "id_columns": id_columns,
        "vector_column": VECTOR_COLUMN,
        "dim": dim,
        "rows": sum(shard["rows"] for shard in shards),
        "shards": shards,
    }
    write_json(manifest_path, manifest, atomic=True)
    logger.info(f"{output_dir}: {manifest['rows']} rows in {len(shards)} shards ({reused} reused from an earlier run)")
    return manifest


def encode_dataset(
    dataset,
    model: str,
    output_dir: str,
    *,
    text_column: str = "text",
    instruction_column: str | None = None,
    id_columns: list[str] | None = None,
    prompt_name: str | None = None,
    input_key: Any = None,
    rows_per_shard: int = DEFAULT_CHUNK_SIZE,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    num_workers: int | None = None,
    num_gpus_per_worker: float = 0,
    num_cpus_per_worker: float = 1,
    restart: bool = False,
    overwrite: bool = False,
) -> dict:
    """Embeds the rows of a ``ray.data.Dataset`` into Parquet shards under ``output_dir``; returns the manifest.

    ``text_column`` holds the texts; ``instruction_column`` (optional) an instruction per row, and
    ``prompt_name`` a named prompt of the checkpoint for the rows without one. ``id_columns`` are carried into
    the shards (default: every column but the text and instruction). Batches of ``rows_per_shard`` rows become
    shards, in input order in the manifest. A rerun skips the shards already written when the dataset yields
    the same batches (a deterministic dataset does); ``input_key`` (any JSON value, e.g. a path and a version)
    is recorded in the manifest, and a complete folder with the same key is not encoded again. Connects to the
    running Ray cluster, or starts a local one (``ray.init()`` first to choose).
    """
    ray = _require_ray()
    if not isinstance(dataset, ray.data.Dataset):
        raise LLM2VecError(f"encode_dataset needs a ray.data.Dataset, not {type(dataset).__name__}")
    columns = dataset.columns()
    if columns is not None:
        for name in [text_column, instruction_column, *(id_columns or [])]:
            if name and name not in columns:
                raise LLM2VecError(f"the dataset has no column {name!r} (columns: {', '.join(columns)})")
        if id_columns is None:
            id_columns = [name for name in columns if name not in (text_column, instruction_column)]
    if VECTOR_COLUMN in (id_columns or []):
        raise LLM2VecError(f"the column name {VECTOR_COLUMN!r} is reserved for the output")
    check_positive_options(rows_per_shard=rows_per_shard, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                           num_workers=num_workers)
    _connect(None)
    model_path = resolve_local(model)
    instruction = named_prompt(model_path, prompt_name) if prompt_name else ""
    key = {"checkpoint": model_fingerprint(model_path), "input": input_key, "instruction": instruction}
    return run_shards(
        dataset, model_path, output_dir, key=key, text_column=text_column, instruction_column=instruction_column,
        instruction=instruction, id_columns=list(id_columns or []), source="dataset", shard_per_block=False,
        rows_per_shard=rows_per_shard, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
        num_workers=num_workers, num_gpus_per_worker=num_gpus_per_worker, num_cpus_per_worker=num_cpus_per_worker,
        restart=restart, overwrite=overwrite,
    )


def encode_path(
    model: str,
    input_path: str,
    output_dir: str,
    *,
    prompt_name: str | None = None,
    address: str | None = None,
    rows_per_shard: int = DEFAULT_CHUNK_SIZE,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    num_workers: int | None = None,
    num_gpus_per_worker: float = 0,
    num_cpus_per_worker: float = 1,
    restart: bool = False,
    compile_model: bool | None = None,
    overwrite: bool = False,
) -> dict:
    """Embeds a .txt/.jsonl file or Parquet (file or folder) on Ray; returns the manifest (see the module doc).
    ``compile_model`` None lets each actor compile when its share of the input pays for it (`should_compile`).
    A complete output of another input, checkpoint or instruction is replaced only with ``overwrite``."""
    refuse_overlap(output_dir, [("input", input_path), ("model", model)])
    ray = _require_ray()
    check_positive_options(rows_per_shard=rows_per_shard, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                           num_workers=num_workers)
    if num_gpus_per_worker < 0:
        raise LLM2VecError(f"--num-gpus-per-worker must not be negative, got {num_gpus_per_worker}")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise LLM2VecError(f"{output_dir}: --engine ray writes a folder of shards; this is a file")
    parquet = os.path.isdir(input_path) or input_path.lower().endswith(".parquet")
    if parquet:
        shards, id_columns, has_instruction = plan_parquet_shards(input_path, rows_per_shard)
        fingerprint = [input_fingerprint(file) for file in _parquet_files(input_path)]
        id_columns = ["row", *id_columns]
    else:
        suffix = input_suffix(input_path)
        shards = plan_text_shards(input_path, rows_per_shard)
        if not shards:
            raise LLM2VecError(f"{input_path}: no texts to encode")
        # a .jsonl's other keys are carried into the output as id columns, as Parquet's other columns are
        id_keys = jsonl_id_keys(input_path) if suffix == ".jsonl" else []
        reserved = sorted(set(id_keys) & {"line", VECTOR_COLUMN})
        if reserved:
            raise LLM2VecError(f"{input_path}: the key {reserved[0]!r} is reserved for the output; rename it")
        shards = [dict(shard, id_keys=json.dumps(id_keys)) for shard in shards]
        fingerprint, id_columns, has_instruction = input_fingerprint(input_path), ["line", *id_keys], True
    input_files = _parquet_files(input_path) if parquet else [input_path]
    model_path = resolve_local(model)
    instruction = named_prompt(model_path, prompt_name) if prompt_name else ""
    _connect(address)
    # One block per planned shard, read by Ray tasks; each block reaches an actor as one batch.
    reader = read_parquet_shard if parquet else read_text_shard
    dataset = ray.data.from_items(shards, override_num_blocks=len(shards)).map_batches(
        reader, batch_size=1, batch_format="numpy"
    )
    key = {"checkpoint": model_fingerprint(model_path), "input": fingerprint, "instruction": instruction,
           "rows_per_shard": rows_per_shard}
    return run_shards(
        dataset, model_path, output_dir, key=key, text_column="text",
        instruction_column="instruction" if has_instruction else None, instruction=instruction,
        id_columns=id_columns, source=input_path, shard_per_block=True, rows_per_shard=rows_per_shard,
        batch_size=batch_size, max_batch_tokens=max_batch_tokens, num_workers=num_workers,
        num_gpus_per_worker=num_gpus_per_worker, num_cpus_per_worker=num_cpus_per_worker, restart=restart,
        overwrite=overwrite, compile_model=compile_model, tokens=sum(os.path.getsize(f) for f in input_files) // CHARS_PER_TOKEN,
    )


def read_vectors(output_dir: str):
    """A complete output folder -> (a pyarrow Table of the id columns, a float32 array of vectors), in input
    order. Refuses a folder without a manifest (an unfinished run) or whose shards do not match it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = _read_manifest(output_dir)
    if manifest is None:
        raise LLM2VecError(f"{output_dir}: no {MANIFEST}; the run is not complete")
    tables = []
    for shard in manifest["shards"]:
        table = pq.read_table(os.path.join(output_dir, shard["file"]))
        if table.num_rows != shard["rows"]:
            raise LLM2VecError(f"{shard['file']}: {table.num_rows} rows, the manifest says {shard['rows']}")
        tables.append(table)
    table = pa.concat_tables(tables)
    flat = table[VECTOR_COLUMN].combine_chunks().flatten().to_numpy()
    return table.drop_columns([VECTOR_COLUMN]), flat.reshape(table.num_rows, manifest["dim"])
