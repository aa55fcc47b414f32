# Copyright 2026 The llm2vec-hf authors. Apache-2.0.
"""Token states -> one vector per text, with LLM2Vec's pooling modes over the pooled tokens. Part of the
remote code."""

from __future__ import annotations

import torch

from .encoding_settings import check_pooling_mode


def pool(
    last_hidden_state: torch.Tensor,
    batch: dict[str, torch.Tensor],
    pooling_mode: str,
    bos_token_id: int | None = None,
) -> torch.Tensor:
    """Pools token states into one vector per row, in float32; ``batch`` comes from `tokenize_inputs`."""
    hidden = last_hidden_state.float()
    mask = batch["pool_mask"].to(hidden.device, hidden.dtype)
    if pooling_mode == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    if pooling_mode == "weighted_mean":
        weights = mask.cumsum(1) * mask
        weights = weights / weights.sum(1, keepdim=True).clamp(min=1e-9)
        return (hidden * weights.unsqueeze(-1)).sum(1)
    attention_mask = batch["attention_mask"].to(hidden.device)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    if pooling_mode in ("eos_token", "last_token"):
        index = (positions * attention_mask).argmax(1)
    elif pooling_mode == "bos_token":
        if bos_token_id is None:
            raise ValueError("bos_token pooling needs a tokenizer with a BOS token")
        is_bos = (batch["input_ids"].to(hidden.device) == bos_token_id) & attention_mask.bool()
        if not bool(is_bos.any(1).all()):
            raise ValueError("bos_token pooling: some inputs have no BOS token (does the tokenizer add one?)")
        index = is_bos.int().argmax(1)
    else:
        check_pooling_mode(pooling_mode)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
