"""``llm2vec-hf encode``: a file of texts in, a ``.npy`` of float32 vectors out (row i = input i).

The input streams through in chunks (``--chunk-size`` texts, default 8192): a first pass counts and checks every
line without keeping any text (a bad line fails before the model loads, with its line number), then each chunk
is read, encoded and written into ``OUTPUT.partial.npy`` at its rows. ``OUTPUT.progress.json`` records, after
each chunk's rows are on disk, how many rows are done and where in the input the next chunk starts. Memory holds
one chunk, whatever the size of the file. The finished file is renamed to OUTPUT, so an OUTPUT that exists is
complete.

A run that was killed resumes where it stopped when it is started again: when the partial output's progress
record names the same input file (path, size, mtime, hash of its first and last MiB), the same checkpoint
(its config files, weight files' sizes and mtimes) and the same instruction. With the same ``--batch-size``,
``--chunk-size``, ``--max-batch-tokens`` and ``--compile`` the result is byte-identical to an uninterrupted run
(chunks start at the same rows, are batched the same way and run the same kernels). A partial output from
another input, checkpoint or prompt is refused with one line; ``--restart`` discards it.

``--processes N`` (or several devices, ``--device cuda:0,cuda:1``) encodes with sentence-transformers'
multi-process pool: one worker per device, each with a copy of the model, loaded through the checkpoint's
sentence-transformers module (the same LLM2Vec semantics, equal vectors within float rounding).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import LLM2VecError
from .loading import resolve_local

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 8192
PROGRESS_VERSION = 1
#: Fault injection for tests: "N" kills the process (SIGKILL) right after chunk N of this run is committed;
#: "N:data" kills it after chunk N's rows are written but before its progress record is.
CRASH_HOOK = "LLM2VEC_HF_ENCODE_CRASH_AFTER_CHUNK"
_DTYPE = np.dtype("<f4")
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


# ---------------------------------------------------------------------------------------------------------------
# Reading the input, one line at a time
# ---------------------------------------------------------------------------------------------------------------


def _input_suffix(path: str) -> str:
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
    suffix = _input_suffix(path)
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


def read_inputs(path: str) -> list[str | list[str]]:
    """Reads ``.txt`` (one text per line) or ``.jsonl`` (``text``, optional ``instruction``) into a list."""
    items = [item for item, _, _ in iter_inputs(path)]
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


# ---------------------------------------------------------------------------------------------------------------
# What a partial output was made from
# ---------------------------------------------------------------------------------------------------------------


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


def _describe_mismatch(old: dict, new: dict) -> str:
    changed = [key for key in new if old.get(key) != new[key]]
    return ", ".join(changed) or "format"


# ---------------------------------------------------------------------------------------------------------------
# The output: a .npy whose header is written first and whose rows are filled in chunk by chunk
# ---------------------------------------------------------------------------------------------------------------


def _create_npy(path: str, rows: int, dim: int) -> int:
    """Writes the header of a (rows, dim) float32 .npy (as np.save would) and sizes the file; returns the data
    offset."""
    with open(path, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(_DTYPE), "fortran_order": False, "shape": (rows, dim)}
        np.lib.format.write_array_header_1_0(handle, header)
        offset = handle.tell()
        handle.truncate(offset + rows * dim * _DTYPE.itemsize)
    return offset


def _npy_data_offset(path: str, rows: int, dim: int) -> int | None:
    """The data offset of an existing .npy of that shape and dtype, or None when it is not one."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            offset = handle.tell()
        size = os.path.getsize(path)
    except (OSError, ValueError):
        return None
    if shape != (rows, dim) or fortran or dtype != _DTYPE or size != offset + rows * dim * _DTYPE.itemsize:
        return None
    return offset


def _write_json_atomically(path: str, data: dict) -> None:
    staging = path + ".tmp"
    with open(staging, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)


def _crash_point() -> tuple[int, bool] | None:
    value = os.environ.get(CRASH_HOOK)
    if not value:
        return None
    chunk, _, phase = value.partition(":")
    return int(chunk), phase == "data"


def _crash() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)


# ---------------------------------------------------------------------------------------------------------------
# Encoders: in this process (LLM2Vec) or a sentence-transformers multi-process pool
# ---------------------------------------------------------------------------------------------------------------


def pool_devices(device: str | None, processes: int | None) -> list[str] | None:
    """The worker devices of a multi-process pool, or None for encoding in this process.

    ``--device a,b`` gives one worker per listed device; ``--processes N`` gives N workers on ``--device``
    (default cpu; plain ``cuda`` means cuda:0 … cuda:N-1).
    """
    devices = [d.strip() for d in (device or "").split(",") if d.strip()]
    if processes is not None and processes < 1:
        raise LLM2VecError(f"--processes must be at least 1, got {processes}")
    if len(devices) > 1:
        if processes not in (None, len(devices)):
            raise LLM2VecError(f"--processes {processes} does not match the {len(devices)} devices of --device")
        return devices
    if not processes or processes == 1:
        return None
    single = devices[0] if devices else "cpu"
    if single == "cuda":
        return [f"cuda:{i}" for i in range(processes)]
    return [single] * processes


class InProcessEncoder:
    def __init__(self, model_path: str, batching: dict, device: str | None, compile_model: bool | None = False,
                 tokens: int = 0):
        from .llm2vec import LLM2Vec, should_compile

        self.model = LLM2Vec.from_pretrained(model_path)
        if should_compile(self.model.model, tokens, device, compile_model):
            self.model.compile_for_inference()
        self.batching, self.device = batching, device

    def __call__(self, items: list) -> np.ndarray:
        vectors = self.model.encode(
            items, show_progress_bar=False, convert_to_numpy=True, device=self.device, **self.batching
        )
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        pass


class PoolEncoder:
    """sentence-transformers' multi-process pool over ``devices``, through the checkpoint's ST module."""

    def __init__(self, model_path: str, batching: dict, devices: list[str], compile_model: bool | None = False,
                 tokens: int = 0):
        from sentence_transformers import SentenceTransformer

        from .llm2vec import should_compile

        self.model = SentenceTransformer(model_path, trust_remote_code=True, device="cpu")
        # each worker encodes its share, and compiles its own copy of the model at its first batch
        self.model[0].compile_on_first_forward = should_compile(
            self.model[0].auto_model, tokens // len(devices), devices[0], compile_model)
        self.batching = batching
        cpu_workers = sum(1 for d in devices if d == "cpu")
        set_threads = cpu_workers and "OMP_NUM_THREADS" not in os.environ
        if set_threads:
            # Workers are spawned and read this at start: each would otherwise use as many threads as cores.
            os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cpu_workers))
        try:
            self.pool = self.model.start_multi_process_pool(devices)
        finally:
            if set_threads:
                del os.environ["OMP_NUM_THREADS"]

    def __call__(self, items: list) -> np.ndarray:
        vectors = self.model.encode(
            items, pool=self.pool, convert_to_numpy=True, show_progress_bar=False, **self.batching
        )
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        self.model.stop_multi_process_pool(self.pool)


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------


def check_positive_options(**values) -> None:
    """Refuses, before any model loads, an option that must be a positive integer (None means unset)."""
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise LLM2VecError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def encode_file(
    model: str,
    input_path: str,
    output_path: str,
    prompt_name: str | None = None,
    batch_size: int = 32,
    device: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    processes: int | None = None,
    restart: bool = False,
    max_batch_tokens: int | None = None,
    compile_model: bool | None = None,
) -> int:
    """Encodes ``input_path`` into ``output_path`` (.npy), streaming and resumable; returns the number of rows.

    ``compile_model`` None compiles when the input is large enough to pay for it (`should_compile`)."""
    if not output_path.endswith(".npy"):
        raise LLM2VecError(f"{output_path}: output must be a .npy file")
    check_positive_options(batch_size=batch_size, max_batch_tokens=max_batch_tokens, chunk_size=chunk_size)
    devices = pool_devices(device, processes)
    check_output_path(output_path)
    with output_lock(output_path):
        return _encode_locked(model, input_path, output_path, prompt_name, batch_size, device, chunk_size, devices,
                              restart, max_batch_tokens, compile_model)


def check_output_path(output_path: str) -> None:
    """Fails before any encoding when the output cannot be written: a folder, a link, a missing parent."""
    if os.path.isdir(output_path):
        raise LLM2VecError(f"{output_path} is a folder; --output must be a .npy file path")
    if os.path.islink(output_path):
        raise LLM2VecError(f"{output_path} is a symbolic link; give the real file path (links are never followed)")
    parent = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(parent):
        raise LLM2VecError(f"{parent} does not exist; create the folder for {os.path.basename(output_path)} first")
    if not os.access(parent, os.W_OK):
        raise LLM2VecError(f"Cannot write to {parent}")


class output_lock:
    """An exclusive lock on ``OUTPUT.lock`` for the whole run: a second run on the same output fails at once with
    one line, before it touches the partial output or its progress record. Removed when the run ends."""

    def __init__(self, output_path: str):
        self.path = output_path + ".lock"
        self.handle = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: runs are not guarded against each other
            return self
        for _ in range(3):
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise LLM2VecError(f"another encode is writing {self.path[:-5]} (its lock {self.path} is held); "
                                   "wait for it to finish or choose another --output") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that the run before us removed while we opened it
                self.handle = handle
                return self
            handle.close()
        raise LLM2VecError(f"could not take the lock {self.path}; another encode keeps replacing it")

    def __exit__(self, *exc):
        if self.handle is not None:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.handle.close()


def _encode_locked(model, input_path, output_path, prompt_name, batch_size, device, chunk_size, devices, restart,
                   max_batch_tokens, compile_model) -> int:
    partial = output_path + ".partial.npy"
    progress_path = output_path + ".progress.json"
    # A fresh run checks the whole input before it resolves (perhaps downloads) and loads the model.
    counted = None if (not restart and os.path.isfile(progress_path)) else count_inputs(input_path)
    model_path = resolve_local(model)
    instruction = named_prompt(model_path, prompt_name) if prompt_name else ""
    key = {"input": input_fingerprint(input_path), "model": model_fingerprint(model_path), "instruction": instruction}

    state = None if restart else _resumable_state(partial, progress_path, key)
    if state is None:
        for stale in (partial, progress_path):
            if os.path.exists(stale):
                os.remove(stale)
        state = {"version": PROGRESS_VERSION, "key": key, "rows": counted or count_inputs(input_path), "dim": None,
                 "done": 0, "offset": 0, "line": 1, "batch_size": batch_size, "chunk_size": chunk_size,
                 "max_batch_tokens": max_batch_tokens, "compile": compile_model}
    else:
        logger.info(f"Resuming {output_path}: {state['done']} of {state['rows']} rows already encoded")
    rows = state["rows"]

    crash = _crash_point()
    single_device = ",".join(d.strip() for d in (device or "").split(",") if d.strip()) or None
    batching = {"batch_size": batch_size, "max_batch_tokens": max_batch_tokens}
    from .llm2vec import CHARS_PER_TOKEN

    tokens = os.path.getsize(input_path) * (rows - state["done"]) // max(rows, 1) // CHARS_PER_TOKEN
    if devices:
        encoder = PoolEncoder(model_path, batching, devices, compile_model, tokens)
    else:
        encoder = InProcessEncoder(model_path, batching, single_device, compile_model, tokens)
    handle = None
    try:
        from tqdm.auto import tqdm

        progress_bar = tqdm(total=rows, initial=state["done"], unit="text", desc="Encoding", file=sys.stderr)
        data_offset = None
        if state["dim"] is not None:
            data_offset = _npy_data_offset(partial, rows, state["dim"])
            handle = open(partial, "r+b")
        chunk_number = 0
        stream = iter_inputs(input_path, state["offset"], state["line"])
        while state["done"] < rows:
            items, end_offset, next_line = [], state["offset"], state["line"]
            for item, end_offset, next_line in stream:
                items.append(item)
                if len(items) == chunk_size:
                    break
            if not items:
                raise LLM2VecError(f"{input_path} has fewer texts than counted ({state['done']} of {rows}); "
                                   "was it changed while encoding?")
            if instruction:
                items = [item if isinstance(item, list) else [instruction, item] for item in items]
            vectors = encoder(items)
            if handle is None:
                state["dim"] = int(vectors.shape[1])
                data_offset = _create_npy(partial, rows, state["dim"])
                handle = open(partial, "r+b")
            handle.seek(data_offset + state["done"] * state["dim"] * _DTYPE.itemsize)
            handle.write(np.ascontiguousarray(vectors, dtype=_DTYPE).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
            chunk_number += 1
            if crash and crash == (chunk_number, True):
                _crash()
            state.update(done=state["done"] + len(items), offset=end_offset, line=next_line)
            _write_json_atomically(progress_path, state)
            progress_bar.update(len(items))
            if crash and crash == (chunk_number, False):
                _crash()
        progress_bar.close()
    finally:
        if handle is not None:
            handle.close()
        encoder.close()
    os.replace(partial, output_path)
    os.remove(progress_path)
    return rows


def _resumable_state(partial: str, progress_path: str, key: dict) -> dict | None:
    """The progress of a partial output made from ``key``; None when there is none to resume."""
    if not (os.path.isfile(partial) and os.path.isfile(progress_path)):
        return None
    try:
        with open(progress_path) as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("version") != PROGRESS_VERSION:
        return None
    if state.get("key") != key:
        raise LLM2VecError(
            f"{partial} was started from a different {_describe_mismatch(state.get('key') or {}, key)}; "
            "rerun with the same input, checkpoint and prompt to resume it, or pass --restart to discard it"
        )
    if state.get("dim") is None or _npy_data_offset(partial, state["rows"], state["dim"]) is None:
        return None
    return state


def add_arguments(parser) -> None:
    parser.add_argument("model", help="exported checkpoint: folder or Hub repo id")
    parser.add_argument("--input", required=True, help=".txt (a text per line) or .jsonl (text, optional instruction)")
    parser.add_argument("--output", required=True, help=".npy file to write (row i = input i)")
    parser.add_argument("--prompt-name", help="named prompt of the checkpoint, used as the instruction")
    parser.add_argument("--batch-size", type=int, default=32, help="most texts in one forward call (default 32)")
    parser.add_argument("--max-batch-tokens", type=int,
                        help="most tokens in one forward call, padding included (default 2048; raise it on a GPU)")
    parser.add_argument("--device", help="torch device (default: cpu); several, comma-separated, for one worker each")
    parser.add_argument("--processes", type=int, help="encode with N worker processes (sentence-transformers pool)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"texts read, encoded and committed at a time (default {DEFAULT_CHUNK_SIZE})")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the model first (one-off 20-70 s, 1.05-1.2x faster after); default: "
                             "when the input is large enough to pay for it (CPU only)")
    parser.add_argument("--restart", action="store_true", help="discard a partial output instead of resuming it")
    engine = parser.add_argument_group("Ray engine (pip install 'llm2vec-hf[ray]'; docs/scale-out.md)")
    engine.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this machine, into a .npy (default); ray: a Ray cluster, --output is a folder of "
                             "Parquet shards and a manifest; --input may also be Parquet (file or folder)")
    engine.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local cluster)")
    engine.add_argument("--num-workers", type=int, help="encoder actors (default: one per GPU, or per CPU)")
    engine.add_argument("--num-gpus-per-worker", type=float, default=0, help="GPUs per actor (default 0: CPU)")


def main(args) -> int:
    if getattr(args, "engine", "local") == "ray":
        from .encode_ray import main as encode_on_ray

        return encode_on_ray(args)
    if getattr(args, "address", None) or getattr(args, "num_workers", None) or getattr(args, "num_gpus_per_worker", 0):
        raise LLM2VecError("--address, --num-workers and --num-gpus-per-worker need --engine ray")
    count = encode_file(args.model, args.input, args.output, args.prompt_name, args.batch_size, args.device,
                        chunk_size=args.chunk_size, processes=args.processes, restart=args.restart,
                        max_batch_tokens=args.max_batch_tokens, compile_model=args.compile)
    print(f"Wrote {count} vectors to {args.output}")
    return 0
