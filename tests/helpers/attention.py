"""Probes of bidirectional attention, shared by the conformance suite and test_bidirectional."""

from __future__ import annotations

import pytest
import torch


def first_token_moves(model, padded: bool) -> bool:
    """True when editing the last real token changes the first token's hidden state."""
    torch.manual_seed(0)
    ids = torch.randint(10, 400, (2, 12))
    mask = torch.ones_like(ids)
    last = 11
    if padded:  # row 0 is right-padded by 3 tokens
        mask[0, -3:] = 0
        last = 8
    edited = ids.clone()
    edited[0, last] = (ids[0, last] + 7) % 400 + 10
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).last_hidden_state[0, 0]
        after = model(input_ids=edited, attention_mask=mask).last_hidden_state[0, 0]
    return (before - after).abs().max().item() > 1e-5


#: The class attribute by which transformers declares that a model class has an attention backend.
SUPPORT_FLAG = {"eager": None, "sdpa": "_supports_sdpa", "flex_attention": "_supports_flex_attn",
                "flash_attention_2": "_supports_flash_attn"}


def skip_unless_supported(model_class, backend: str) -> None:
    flag = SUPPORT_FLAG[backend]
    if flag is not None and not getattr(model_class, flag, False):
        pytest.skip(f"{model_class.__name__} declares no {backend} attention in this transformers")
