"""Attention really is bidirectional: changing the last token changes the first token's output.

Checked for every family under every attention backend this machine runs, through our classes and through the
native classes that an exported config.json selects without remote code. A causal control shows the probe can
fail.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import AutoModel

from llm2vec_hf import FAMILIES
from llm2vec_hf.training.tiny_model import tiny_config, train_tokenizer

BACKENDS = ["eager", "sdpa"]
if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
    BACKENDS.append("flash_attention_2")


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


def build(family: str, backend: str, bidirectional: bool = True):
    config = tiny_config(family, train_tokenizer(family))
    cls = FAMILIES[family]
    skip_unless_supported(cls.model, backend)
    if bidirectional:
        return cls.model._from_config(cls.config(**config.to_dict()), attn_implementation=backend).eval()
    return AutoModel.from_config(config, attn_implementation=backend).eval()


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_our_classes_are_bidirectional(family, backend, padded):
    assert first_token_moves(build(family, backend), padded)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_native_class_is_causal_without_the_flag(family):
    """Control: the same probe on the plain decoder sees no change, so the probe can fail."""
    assert not first_token_moves(build(family, "eager", bidirectional=False), padded=False)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_exported_config_runs_bidirectionally_without_remote_code(exported, backend, family):
    """The native class that config.json selects (no trust_remote_code) honours is_causal=False."""
    skip_unless_supported(FAMILIES[family].model, backend)
    model = AutoModel.from_pretrained(exported(family), attn_implementation=backend).eval()
    assert not type(model).__name__.startswith("Bidirectional")
    assert first_token_moves(model, padded=True), family


@pytest.mark.slow
def test_flex_attention_is_bidirectional():
    """flex_attention runs on CPU through torch.compile (slow: ~45 s), so one family covers the mask path."""
    if not hasattr(torch.nn.attention, "flex_attention"):
        pytest.skip("this torch has no flex_attention")
    model = build("llama", "flex_attention")
    assert first_token_moves(model, padded=True)


def test_attention_modules_have_causal_switched_off():
    model = build("llama", "eager")
    flags = [m.is_causal for m in model.modules() if hasattr(m, "is_causal")]
    assert flags and not any(flags)
    assert model.config.is_causal is False and model.config.use_bidirectional_attention is True


def test_enable_bidirectional_false_is_causal_even_on_an_exported_checkpoint(exported):
    from llm2vec_hf import LLM2Vec

    causal = LLM2Vec.from_pretrained(str(exported("llama")), enable_bidirectional=False).model
    bidirectional = LLM2Vec.from_pretrained(str(exported("llama"))).model
    assert not first_token_moves(causal, padded=True)
    assert first_token_moves(bidirectional, padded=True)
