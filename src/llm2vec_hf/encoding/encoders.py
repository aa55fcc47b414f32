"""The encoders of ``encode``: the model in this process (`LLM2Vec`), or sentence-transformers' multi-process
workers (one per device, each with a copy of the model)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import LLM2VecError, one_line
from ..llm2vec import LLM2Vec
from ..modeling.encoding_settings import check_positive_integer
from .compile_policy import should_compile


def check_positive_options(**values) -> None:
    """Refuses, before any model loads, a command-line option that must be a positive integer (None: unset); the
    rule is the encoder's own (`check_positive_integer`), named as the option is spelled."""
    for name, value in values.items():
        if value is not None:
            try:
                check_positive_integer(f"--{name.replace('_', '-')}", value)
            except ValueError as error:
                raise LLM2VecError(str(error)) from None


def worker_devices(device: str | None, processes: int | None) -> list[str] | None:
    """The devices of the worker processes, or None for encoding in this process.

    ``--device a,b`` gives one worker per listed device; ``--processes N`` gives N workers on ``--device``
    (default cpu; plain ``cuda`` means cuda:0 … cuda:N-1).
    """
    devices = [d.strip() for d in (device or "").split(",") if d.strip()]
    check_positive_options(processes=processes)
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


def check_device(name: str) -> None:
    """Refuses, before anything loads, a ``--device`` that torch does not know, that this machine lacks, or that
    holds no data (``meta``)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise LLM2VecError(f"--device {name}: not a torch device ({one_line(error)})") from None
    if device.type == "meta":
        raise LLM2VecError(f"--device {name}: the meta device holds no data, so it computes no vectors")
    if device.type == "cpu":
        return
    backend = getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise LLM2VecError(f"--device {name}: this torch has no {device.type} device available")
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise LLM2VecError(f"--device {name}: this machine has {count()} {device.type} device(s)")


class InProcessEncoder:
    def __init__(self, model_path: str, batching: dict, device: str | None, compile_model: bool | None = False,
                 tokens: int = 0):
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


class WorkerPoolEncoder:
    """sentence-transformers' multi-process pool of workers over ``devices``, through the checkpoint's ST
    module."""

    def __init__(self, model_path: str, batching: dict, devices: list[str], compile_model: bool | None = False,
                 tokens: int = 0):
        from sentence_transformers import SentenceTransformer

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
            self.workers = self.model.start_multi_process_pool(devices)
        finally:
            if set_threads:
                del os.environ["OMP_NUM_THREADS"]

    def __call__(self, items: list) -> np.ndarray:
        vectors = self.model.encode(
            items, pool=self.workers, convert_to_numpy=True, show_progress_bar=False, **self.batching
        )
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        self.model.stop_multi_process_pool(self.workers)
