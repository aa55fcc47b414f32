"""Editing a safetensors file in place, to make damaged checkpoints and adapters."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file


def rewrite_weights(path: Path, keep=lambda key: True, rename=lambda key: key, extra=None) -> None:
    weights = {rename(k): v for k, v in load_file(path).items() if keep(k)}
    weights.update(extra or {})
    save_file(weights, path, metadata={"format": "pt"})
