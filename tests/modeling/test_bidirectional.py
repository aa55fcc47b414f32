"""Attention really is bidirectional: changing the last token changes the first token's output.

Every family is checked under every attention backend (eager, sdpa, flex) in the conformance suite
(test_conformance.py; both use the probe of tests/helpers/attention.py); here: the attention modules' flags, and a causal baseline
of an exported checkpoint.
"""

from __future__ import annotations

from transformers import AutoModel

from helpers.attention import first_token_moves, skip_unless_supported
from llm2vec_hf import FAMILIES
from llm2vec_hf.training.tiny_model import tiny_config, train_tokenizer


def build(family: str, backend: str, bidirectional: bool = True):
    config = tiny_config(family, train_tokenizer(family))
    cls = FAMILIES[family]
    skip_unless_supported(cls.model, backend)
    if bidirectional:
        return cls.model._from_config(cls.config(**config.to_dict()), attn_implementation=backend).eval()
    return AutoModel.from_config(config, attn_implementation=backend).eval()


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
