"""The engine-independent half of exact serving (`llm2vec_hf.serving`), without any engine installed: token ids
for the engine and the pooling of per-token states give ``LLM2Vec.encode``'s vectors; a state count that does not
match the prompt is refused; export warns where vLLM would run a family causal. tests/serving/test_vllm.py runs vLLM."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch

from llm2vec_hf import LLM2Vec
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.modeling.modeling_llm2vec import FAMILIES, UNAVAILABLE_FAMILIES
from llm2vec_hf.modeling.serving_engines import VLLM_CAUSAL_FAMILIES, VLLM_REFUSED, VLLM_RUNS_BIDIRECTIONAL
from llm2vec_hf.serving import vllm_causal_warning
from llm2vec_hf.serving.pooling import TokenStatePooler

from helpers.samples import SAMPLE_INPUTS


def engine_states(model, input_ids: list[list[int]]) -> list[torch.Tensor]:
    """What an engine's token_embed task returns: each prompt run alone, one final state per token."""
    with torch.inference_mode():
        return [model(input_ids=torch.tensor([ids])).last_hidden_state[0] for ids in input_ids]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma"])
@pytest.mark.parametrize("pooling_mode", ["mean", "weighted_mean", "eos_token", "last_token", "bos_token"])
def test_pooled_token_states_are_the_llm2vec_vectors(exported, family, pooling_mode):
    if pooling_mode == "bos_token" and family == "qwen2":
        pytest.skip("Qwen2 tokenizers add no BOS")
    folder = str(exported(family, pooling_mode))
    reference = LLM2Vec.from_pretrained(folder)
    pooler = TokenStatePooler.from_pretrained(folder)
    assert pooler.settings == reference.settings and pooler.model_type == family
    input_ids, n_pooled = pooler.prompts(SAMPLE_INPUTS)
    vectors = pooler.pool(engine_states(reference.model, input_ids), input_ids, n_pooled)
    expected = reference.encode(SAMPLE_INPUTS, show_progress_bar=False)
    assert torch.allclose(vectors, expected, atol=1e-5, rtol=0)


def test_a_state_count_that_is_not_the_prompt_length_is_refused(exported):
    folder = str(exported("llama", "mean"))
    pooler = TokenStatePooler.from_pretrained(folder)
    input_ids, n_pooled = pooler.prompts(SAMPLE_INPUTS[:2])
    states = engine_states(LLM2Vec.from_pretrained(folder).model, input_ids)
    states[1] = states[1][1:]  # an engine that truncated the prompt
    with pytest.raises(ValueError, match="Input #1: the engine returned token states of shape"):
        pooler.pool(states, input_ids, n_pooled)


@pytest.mark.parametrize("family", ["gemma", "llama", "granite"])
def test_export_warns_where_vllm_runs_the_family_causal(tiny_bases, tmp_path, caplog, family):
    with caplog.at_level(logging.WARNING, logger="llm2vec_hf.checkpoint"):
        export_checkpoint(str(tiny_bases[family]), str(tmp_path / "out"), max_length=32)
    # (tiny models have head_dim 8: the CPU-build warning, tested in test_model_card.py, is not this one)
    warned = [r.getMessage() for r in caplog.records if "vLLM" in r.getMessage() and "head_dim" not in r.getMessage()]
    if family in VLLM_CAUSAL_FAMILIES:
        assert warned == [vllm_causal_warning(family)] and "--model-impl transformers" in warned[0]
    elif family in VLLM_REFUSED:
        assert warned == [vllm_causal_warning(family)] and "causal" in warned[0]
    else:
        assert warned == []


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_the_vllm_module_says_what_to_install():
    with pytest.raises(ImportError, match="needs vLLM"):
        import llm2vec_hf.serving.vllm  # noqa: F401


def test_families_vllm_does_not_run_as_llm2vec_are_refused_and_the_card_says_so():
    from llm2vec_hf.checkpoint.model_card import serving_section
    from llm2vec_hf.modeling.encoding_settings import EncodingSettings
    from llm2vec_hf.serving import check_vllm_family

    for family in ("llama", "qwen3", "gemma3_text", "phi3", "gemma"):
        check_vllm_family(family)
    with pytest.raises(ValueError, match="granite.*causal.*measured"):
        check_vllm_family("granite")
    with pytest.raises(ValueError, match="not measured on falcon"):
        check_vllm_family("falcon")
    settings = EncodingSettings(text_template="", eos_text="")
    assert "--io-processor-plugin llm2vec" not in serving_section("granite", settings, "org/name")
    assert "--io-processor-plugin llm2vec" in serving_section("phi3", settings, "org/name")


def test_the_vllm_family_lists_are_the_measured_verdicts():
    """What the plugin admits is what benchmarks/vllm_families.py measured (benchmarks/results/vllm_families.json):
    a family enters a list by a measurement, not by reading vLLM's source."""
    results = json.loads((Path(__file__).parents[2] / "benchmarks/results/vllm_families.json").read_text())["results"]
    for family, measured in results.items():
        backend = measured.get("transformers", {}).get("verdict")
        if measured["auto"]["verdict"] == "bidirectional":
            assert family in VLLM_RUNS_BIDIRECTIONAL, family
        elif backend == "bidirectional":
            assert family in VLLM_CAUSAL_FAMILIES, family
        else:
            assert family not in VLLM_RUNS_BIDIRECTIONAL + VLLM_CAUSAL_FAMILIES, family
    for family in VLLM_RUNS_BIDIRECTIONAL + VLLM_CAUSAL_FAMILIES + tuple(VLLM_REFUSED):
        assert family in results and (family in FAMILIES or family in UNAVAILABLE_FAMILIES), family  # declared


def test_serving_engines_must_run_the_checkpoints_dtype(exported, tmp_path):
    """The dtype rule the vLLM client and plugin apply: the checkpoint's config.json dtype, nothing else."""
    pooler = TokenStatePooler.from_pretrained(exported("llama", "mean"))
    assert pooler.dtype == "float32"
    pooler.check_engine_dtype(torch.float32)
    pooler.check_engine_dtype("float32")
    for other in (torch.float16, "bfloat16", "auto"):
        with pytest.raises(ValueError, match="--dtype float32"):
            pooler.check_engine_dtype(other)
    bf16 = export_checkpoint(str(exported("llama", "mean")), str(tmp_path / "bf16"), dtype="bfloat16",
                             st_modules="remote")
    half = TokenStatePooler.from_pretrained(bf16)
    assert half.dtype == "bfloat16"
    half.check_engine_dtype(torch.bfloat16)
    with pytest.raises(ValueError, match="--dtype bfloat16"):
        half.check_engine_dtype(torch.float32)
