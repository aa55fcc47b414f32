"""Encodes a file of texts into a ``.npy`` of float32 vectors (row i = input i), streaming and resumable.

Data flows: `encoding.inputs` reads and checks the lines (and fingerprints the input and the checkpoint) ->
an encoder of `encoding.encoders` (in this process, or worker processes) -> `encoding.npy_writer` fills the
rows of ``OUTPUT.partial.npy`` chunk by chunk and records the progress after each. What the command guarantees
(resume, byte-identical results, one-line refusals) is in `llm2vec_hf.commands.encode`.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from . import DEFAULT_CHUNK_SIZE
from .encoders import InProcessEncoder, WorkerPoolEncoder, check_device, check_positive_options, worker_devices
from .inputs import count_inputs, input_fingerprint, iter_inputs, model_fingerprint, named_prompt
from .npy_writer import (
    NPY_DTYPE,
    PROGRESS_VERSION,
    create_npy,
    npy_data_offset,
    resumable_state,
    check_output_path,
    output_lock,
)
from ..errors import LLM2VecError
from ..loading.json_files import write_json
from ..loading.models import check_checkpoint_files
from ..loading.paths import resolve_local
from ..output_paths import refuse_existing, refuse_overlap
from .compile_policy import CHARS_PER_TOKEN

logger = logging.getLogger(__name__)


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
    overwrite: bool = False,
) -> int:
    """Encodes ``input_path`` into ``output_path`` (.npy), streaming and resumable; returns the number of rows.

    ``compile_model`` None compiles when the input is large enough to pay for it (`should_compile`). An existing
    ``output_path`` is replaced only with ``overwrite`` (`output_paths`)."""
    if not output_path.endswith(".npy"):
        raise LLM2VecError(f"{output_path}: output must be a .npy file")
    check_positive_options(batch_size=batch_size, max_batch_tokens=max_batch_tokens, chunk_size=chunk_size)
    devices = worker_devices(device, processes)
    for name in devices or [d.strip() for d in (device or "").split(",") if d.strip()]:
        check_device(name)
    check_output_path(output_path)
    refuse_overlap(output_path, [("input file", input_path), ("model", model)])
    refuse_existing(output_path, overwrite)
    with output_lock(output_path):
        return _encode_locked(model, input_path, output_path, prompt_name, batch_size, device, chunk_size, devices,
                              restart, max_batch_tokens, compile_model)


def _encode_locked(model, input_path, output_path, prompt_name, batch_size, device, chunk_size, devices, restart,
                   max_batch_tokens, compile_model) -> int:
    partial = output_path + ".partial.npy"
    progress_path = output_path + ".progress.json"
    # A fresh run checks the whole input before it resolves (perhaps downloads) and loads the model.
    counted = None if (not restart and os.path.isfile(progress_path)) else count_inputs(input_path)
    model_path = resolve_local(model)
    check_checkpoint_files(model_path)  # every encoder (this process or workers) would read it otherwise
    instruction = named_prompt(model_path, prompt_name) if prompt_name else ""
    key = {"input": input_fingerprint(input_path), "model": model_fingerprint(model_path), "instruction": instruction}

    state = None if restart else resumable_state(partial, progress_path, key)
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

    single_device = ",".join(d.strip() for d in (device or "").split(",") if d.strip()) or None
    batching = {"batch_size": batch_size, "max_batch_tokens": max_batch_tokens}
    tokens = os.path.getsize(input_path) * (rows - state["done"]) // max(rows, 1) // CHARS_PER_TOKEN
    if devices:
        encoder = WorkerPoolEncoder(model_path, batching, devices, compile_model, tokens)
    else:
        encoder = InProcessEncoder(model_path, batching, single_device, compile_model, tokens)
    handle = None
    try:
        from tqdm.auto import tqdm

        progress_bar = tqdm(total=rows, initial=state["done"], unit="text", desc="Encoding", file=sys.stderr)
        data_offset = None
        if state["dim"] is not None:
            data_offset = npy_data_offset(partial, rows, state["dim"])
            handle = open(partial, "r+b")
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
                data_offset = create_npy(partial, rows, state["dim"])
                handle = open(partial, "r+b")
            handle.seek(data_offset + state["done"] * state["dim"] * NPY_DTYPE.itemsize)
            handle.write(np.ascontiguousarray(vectors, dtype=NPY_DTYPE).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
            state.update(done=state["done"] + len(items), offset=end_offset, line=next_line)
            write_json(progress_path, state, atomic=True)
            progress_bar.update(len(items))
        progress_bar.close()
    finally:
        if handle is not None:
            handle.close()
        encoder.close()
    os.replace(partial, output_path)
    os.remove(progress_path)
    return rows
