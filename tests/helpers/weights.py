"""Editing a safetensors file in place, to make damaged checkpoints and adapters."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file


def rewrite_weights(path: Path, keep=lambda key: True, rename=lambda key: key, extra=None) -> None:
    weights = {rename(k): v for k, v in load_file(path).items() if keep(k)}
    weights.update(extra or {})
    save_file(weights, path, metadata={"format": "pt"})


def save_lora(base: Path, folder: Path) -> Path:
    """A LoRA adapter (r=2 on q_proj) of ``base``, saved by PEFT into ``folder``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    model = get_peft_model(AutoModel.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(folder)
    return folder
