"""Adapters trained with PEFT on the ``…ForCausalLM`` (as MNTP or a user trains them) attach to the bidirectional
encoder on every path: ``LLM2Vec.from_pretrained`` merged and unmerged, and export streamed and through PEFT's
whole-model merge. Their configs name modules by the paths they had under the causal LM, one ``model.`` deeper
than the encoder's: ``all-linear`` is saved as full paths (PEFT shortens them to leaf names only from 20 modules
on), and ``target_parameters``, ``exclude_modules``, ``layers_to_transform``, ``rank_pattern`` and
``alpha_pattern`` may name them too. Each merge must equal PEFT's merge on the causal LM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llm2vec_hf import LLM2Vec
from llm2vec_hf.checkpoint import export as export_module
from llm2vec_hf.checkpoint import merged_weights
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.checkpoint.validation import check_checkpoint
from llm2vec_hf.errors import AdapterMismatchError, LLM2VecError
from llm2vec_hf.training.tiny_model import build_tiny_decoder

from helpers.samples import SAMPLE_INPUTS

pytestmark = pytest.mark.usefixtures("one_thread")

#: tiny mixture-of-experts layers (2 layers, 4 experts, 2 per token; Qwen2-MoE with its shared expert)
SIZES = {
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
                  "shared_expert_intermediate_size": 24},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 16},
    "llama": {},
}
#: the router's parameter in each family (the causal LM's path, as a user would pass it to PEFT)
ROUTER = {"qwen2_moe": "mlp.gate.weight", "mixtral": "mlp.gate.weight"}


def _lora(family: str, form: str):
    """The LoRA config of each form, as PEFT's users write them against the causal LM."""
    from peft import LoraConfig

    common = {"r": 4, "lora_alpha": 8, "init_lora_weights": False}
    if form == "all-linear":
        return LoraConfig(target_modules="all-linear", **common)
    if form == "full-paths":
        # all-linear plus the fused experts and one router by full path, and per-module ranks and alphas by full path
        return LoraConfig(target_modules="all-linear",
                          target_parameters=["model.layers.1.mlp.experts.gate_up_proj",
                                             "model.layers.0.mlp.experts.down_proj", f"model.layers.1.{ROUTER[family]}"],
                          rank_pattern={"model.layers.0.self_attn.q_proj": 2, "model.layers.0.mlp.experts.down_proj": 3},
                          alpha_pattern={"model.layers.1.self_attn.o_proj": 3, "model.layers.0.mlp.experts.down_proj": 5},
                          **common)
    if form == "selected-layers":
        # leaf names narrowed by layer index, with one module excluded by its full path
        return LoraConfig(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], layers_to_transform=[1],
                          layers_pattern="layers", exclude_modules=["model.layers.1.self_attn.k_proj"], **common)
    raise ValueError(form)


def _train(base: Path, folder: Path, config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Saves a random adapter made by PEFT on the causal LM; returns PEFT's merge of it there (the reference)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(folder))
    return {k: v.clone() for k, v in peft_model.merge_and_unload().model.state_dict().items()}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal-lm-adapters")
    cache = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = build_tiny_decoder(root / family, family, **SIZES[family])
        return cache[family]

    return get


def _max_difference(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    assert set(got) == set(expected)
    return max((got[k].float() - expected[k].float()).abs().max().item() for k in expected)


def _export(base, adapter, output, streamed: bool) -> str:
    """export_checkpoint made to stream (the whole-model merge fails) or to merge through PEFT (streaming
    refuses)."""

    def whole_model(*args, **kwargs):
        raise AssertionError("export fell back to merging on the loaded model")

    def unplaceable(self, updates):
        raise merged_weights.UnsupportedForStreaming("test: the whole-model path")

    with pytest.MonkeyPatch.context() as patch:
        if streamed:
            patch.setattr(export_module, "load_bidirectional", whole_model)
        else:
            patch.setattr(merged_weights.BaseWeights, "written_updates", unplaceable)
        return export_checkpoint(str(base), str(output), adapters=[str(adapter)], max_length=48, doc_max_length=40)


CASES = [("qwen2_moe", "all-linear"), ("mixtral", "all-linear"), ("qwen2_moe", "full-paths"),
         ("mixtral", "full-paths"), ("qwen2_moe", "selected-layers"), ("llama", "all-linear")]


@pytest.mark.parametrize("family, form", [
    # the reported case in the fast lane, the rest with the slow tests (about 1 s each)
    pytest.param(family, form, id=f"{family}-{form}", marks=[] if i == 0 else [pytest.mark.slow])
    for i, (family, form) in enumerate(CASES)])
def test_causal_lm_adapter_attaches_on_every_path(bases, tmp_path, family, form):
    """Merged on load, unmerged on load, exported streamed and through PEFT: each equals PEFT's merge on the
    causal LM within 1e-5 (float32), and the exports pass push's check."""
    base = bases(family)
    adapter = tmp_path / "adapter"
    expected = _train(base, adapter, _lora(family, form))
    saved = json.loads((adapter / "adapter_config.json").read_text())
    if form == "all-linear":
        # the reported case: PEFT saves a small model's Linear layers by their full paths (Qwen2-MoE's too with
        # PEFT 0.21). Where PEFT has a mapping for the family's experts (Mixtral; Qwen2-MoE from PEFT 0.22) it
        # saves leaf names, the experts and router as parameters, and a rank and alpha pattern for the fused
        # gate_up_proj, all of which must carry over
        full_paths = all(name.startswith("model.layers.") for name in saved["target_modules"])
        assert full_paths or (saved["target_parameters"] and saved["rank_pattern"] and saved["alpha_pattern"])
        assert full_paths or family != "llama"

    merged = LLM2Vec.from_pretrained(str(base), peft_model_name_or_path=str(adapter), merge_peft=True)
    assert _max_difference(merged.model.state_dict(), expected) <= 1e-5
    plain = LLM2Vec.from_pretrained(str(base)).model.state_dict()
    changed = {k for k in expected if not torch.equal(expected[k], plain[k])}
    if form == "full-paths":  # the parameters and patterns named by full path took effect
        assert {"layers.1.mlp.experts.gate_up_proj", "layers.0.mlp.experts.down_proj", "layers.1.mlp.gate.weight",
                "layers.0.self_attn.q_proj.weight"} <= changed
    if form == "selected-layers":
        assert changed == {"layers.1.self_attn.q_proj.weight", "layers.1.self_attn.v_proj.weight",
                           "layers.1.self_attn.o_proj.weight"}

    vectors = merged.encode(SAMPLE_INPUTS, show_progress_bar=False).numpy()
    unmerged = LLM2Vec.from_pretrained(str(base), peft_model_name_or_path=str(adapter), merge_peft=False)
    assert np.abs(unmerged.encode(SAMPLE_INPUTS, show_progress_bar=False).numpy() - vectors).max() <= 1e-5

    for streamed in (True, False):
        out = _export(base, adapter, tmp_path / f"out-{streamed}", streamed)
        assert _max_difference(LLM2Vec.from_pretrained(out).model.state_dict(), expected) <= 1e-5, streamed
        check_checkpoint(out)


def test_rank_and_alpha_patterns_follow_the_training_paths():
    """A pattern keyed by a causal-LM path gives its module the rank and alpha it had in training, and only that
    module: the rewritten keys are anchored at the start of the encoder's path."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists
    from peft.utils.other import get_pattern_key

    from llm2vec_hf.loading.adapters import encoder_config

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = torch.nn.Linear(2, 2)
            self.inner = torch.nn.ModuleDict({"q_proj": torch.nn.Linear(2, 2)})

    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([Layer(), Layer()])
    config = LoraConfig(target_modules=["model.layers.0.q_proj", "inner.q_proj"], r=4, lora_alpha=8,
                        rank_pattern={"model.layers.0.q_proj": 2}, alpha_pattern={"inner.q_proj": 3})
    config = encoder_config(config, model)
    chosen = {name for name, _ in model.named_modules() if name and check_target_module_exists(config, name)}
    assert chosen == {"layers.0.q_proj", "layers.0.inner.q_proj", "layers.1.inner.q_proj"}
    ranks = {name: config.rank_pattern.get(get_pattern_key(list(config.rank_pattern), name), config.r)
             for name in chosen}
    alphas = {name: config.alpha_pattern.get(get_pattern_key(list(config.alpha_pattern), name), config.lora_alpha)
              for name in chosen}
    assert ranks == {"layers.0.q_proj": 2, "layers.0.inner.q_proj": 4, "layers.1.inner.q_proj": 4}
    assert alphas == {"layers.0.q_proj": 8, "layers.0.inner.q_proj": 3, "layers.1.inner.q_proj": 3}


def test_adapter_on_the_language_model_head_is_refused_whole(bases, tmp_path):
    """An adapter that also trained the causal LM's head cannot apply to an encoder, which has no head: refused by
    name, never attached without it."""
    from peft import LoraConfig

    base = bases("qwen2_moe")
    adapter = tmp_path / "adapter"
    _train(base, adapter, LoraConfig(target_modules=["q_proj", "lm_head"], r=2, init_lora_weights=False))
    with pytest.raises(LLM2VecError, match=r"lm_head.*which the encoder does not have"):
        LLM2Vec.from_pretrained(str(base), peft_model_name_or_path=str(adapter))
    for streamed in (True, False):
        with pytest.raises(AdapterMismatchError, match=r"lm_head"):
            _export(base, adapter, tmp_path / f"out-{streamed}", streamed)
