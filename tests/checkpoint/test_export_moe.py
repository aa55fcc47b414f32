"""Export of mixture-of-experts bases, streamed (docs/architecture.md, "Export at scale"): transformers fuses their
per-expert checkpoint matrices into one 3-D parameter on load, the export keeps the checkpoint layout, and each
adapter's update lands on the checkpoint tensors it changes (experts included) as PEFT's whole-model merge puts it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from llm2vec_hf import LLM2Vec
from llm2vec_hf.checkpoint import export as export_module
from llm2vec_hf.checkpoint import merged_weights
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.checkpoint.validation import check_checkpoint
from llm2vec_hf.errors import CheckpointError
from llm2vec_hf.loading.models import load_bidirectional
from llm2vec_hf.modeling.modeling_llm2vec import FAMILIES
from llm2vec_hf.training.tiny_model import build_tiny_decoder

from helpers.processes import export_peak_bytes
from helpers.samples import SAMPLE_INPUTS
from helpers.sharded import assert_sharded_loads_on_every_path, stored_weights

pytestmark = pytest.mark.usefixtures("one_thread")

#: tiny expert layers of each family (4 experts, 2 per token), on transformers' own configs
MOE_SIZES = {
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 16},
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
                  "shared_expert_intermediate_size": 24},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16},
    "gpt_oss": {"num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 16},
    "dots1": {"n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16, "n_shared_experts": 1,
              "first_k_dense_replace": 1},  # layer 0 dense
}
#: the families whose checkpoints hold one matrix per expert (GPT-OSS's hold the stack, as its model does)
PER_EXPERT = ["dots1", "mixtral", "qwen2_moe", "qwen3_moe"]
#: LoRA on the Linear layers (attention, Qwen2-MoE's shared expert and its gate) and on the expert and router
#: parameters (PEFT's target_parameters, which "all-linear" resolves to for these layers)
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "shared_expert.gate_proj", "shared_expert.up_proj",
          "shared_expert.down_proj", "shared_expert_gate"]
PARAMETERS = ["experts.gate_up_proj", "experts.down_proj", "gate.weight", "router.weight"]


def _adapter(base, folder, seed, rank, alpha) -> str:
    """A random LoRA adapter made by PEFT on the ``…ForCausalLM`` (as trained adapters are)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    modules = [m for m in LINEAR if any(n.endswith("." + m) for n, _ in model.named_modules())]
    parameters = [p for p in PARAMETERS if any(n.endswith("." + p) for n, _ in model.named_parameters())]
    torch.manual_seed(seed)
    lora = LoraConfig(r=rank, lora_alpha=alpha, target_modules=modules, target_parameters=parameters,
                      init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(str(folder))
    return str(folder)


def _streamed_export(base, output, adapters=(), **kwargs) -> str:
    """export_checkpoint with the whole-model fallback made to fail: the result was streamed."""

    def whole_model(*args, **kw):
        raise AssertionError("export fell back to merging on the loaded model")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_module, "load_bidirectional", whole_model)
        return export_checkpoint(str(base), str(output), adapters=list(adapters), **kwargs)


@pytest.fixture(scope="module")
def moe_bases(tmp_path_factory):
    """``family -> (base folder, [two adapters])``: a tiny 2-layer base in float32 and an MNTP-like and a
    supervised-like adapter (other ranks and alphas than PEFT's defaults)."""
    root = tmp_path_factory.mktemp("moe")
    cache = {}

    def get(family):
        if family not in cache:
            base = build_tiny_decoder(root / family, family, **MOE_SIZES[family])
            cache[family] = base, [_adapter(base, root / f"{family}-a1", 1, rank=4, alpha=12),
                                   _adapter(base, root / f"{family}-a2", 2, rank=2, alpha=3)]
        return cache[family]

    return get


@pytest.mark.parametrize("family", sorted(MOE_SIZES))
def test_streamed_moe_export_equals_peft_merge(moe_bases, tmp_path, family):
    """Streamed, in the checkpoint's layout (per expert, or GPT-OSS's stacks stored as (experts, in, out));
    loaded, the same weights and vectors as PEFT's merge of both adapters into the loaded base (the official
    path), expert and router updates included."""
    base, adapters = moe_bases(family)
    out = _streamed_export(base, tmp_path / "out", adapters)

    with safe_open(str(base / "model.safetensors"), "pt") as handle:
        layout = {key.removeprefix("model.") for key in handle.keys() if not key.startswith("lm_head.")}
    written = stored_weights(out)
    assert set(written) == layout  # the base's own names: transformers converts the export as it converts the base
    assert any(".experts.0." in key for key in written) == (family in PER_EXPERT)

    reference = LLM2Vec.from_pretrained(str(base), peft_model_name_or_path=adapters, merge_peft=True)
    expected = reference.model.state_dict()
    loaded = LLM2Vec.from_pretrained(out)
    got = loaded.model.state_dict()
    assert set(got) == set(expected)
    assert max((got[k] - expected[k]).abs().max().item() for k in expected) <= 1e-5
    plain = load_bidirectional(str(base), dtype=torch.float32)[0].state_dict()
    changed = {k for k in expected if not torch.equal(expected[k], plain[k])}
    router = "router" if family == "gpt_oss" else "gate"
    assert {"layers.1.mlp.experts.gate_up_proj", "layers.1.mlp.experts.down_proj", f"layers.1.mlp.{router}.weight",
            "layers.0.self_attn.q_proj.weight"} <= changed
    if family == "qwen2_moe":
        assert {"layers.0.mlp.shared_expert.up_proj.weight", "layers.1.mlp.shared_expert_gate.weight"} <= changed

    vectors = loaded.encode(SAMPLE_INPUTS, show_progress_bar=False).numpy()
    assert np.abs(vectors - reference.encode(SAMPLE_INPUTS, show_progress_bar=False).numpy()).max() <= 1e-5


def _copy_without_weights(base: Path, folder: Path) -> Path:
    """``base``'s config and tokenizer files in ``folder``, for a test to write other weights beside them."""
    folder.mkdir()
    for entry in base.iterdir():
        if entry.name != "model.safetensors":
            (folder / entry.name).write_bytes(entry.read_bytes())
    return folder


def test_base_stored_in_the_fused_layout(moe_bases, tmp_path):
    """A base whose file already holds the fused 3-D expert parameters (transformers loads it without
    converting): the export keeps that layout, and each expert's update is added to its slice of the stack."""
    from transformers import AutoModelForCausalLM

    base, adapters = moe_bases("qwen3_moe")
    fused = _copy_without_weights(base, tmp_path / "fused")
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(fused / "model.safetensors"),
              metadata={"format": "pt"})
    out = _streamed_export(fused, tmp_path / "out", adapters)
    written = stored_weights(out)
    assert "layers.0.mlp.experts.gate_up_proj" in written and not any(".experts.0." in k for k in written)
    expected = load_bidirectional(str(base), adapters, dtype=torch.float32)[0].state_dict()
    assert max((written[k] - expected[k]).abs().max().item() for k in expected) <= 1e-5


def test_bfloat16_moe_export_matches_peft_merge(moe_bases, tmp_path):
    """In bfloat16 the merge rounds as PEFT's does (its ParamWrapper adds an update rounded to bfloat16): the
    weights differ from PEFT's bfloat16 merge by at most the float32 summation order, one bfloat16 step."""
    base, adapters = moe_bases("mixtral")
    out = _streamed_export(base, tmp_path / "out", adapters, dtype="bfloat16")
    written = stored_weights(out)
    assert {t.dtype for t in written.values()} == {torch.bfloat16}
    reference = load_bidirectional(str(base), adapters, dtype=torch.bfloat16)[0].state_dict()
    got = LLM2Vec.from_pretrained(out).model.state_dict()
    for name, tensor in reference.items():
        step = tensor.float().abs().clamp(min=1e-30) * 2 ** -7  # one bfloat16 step at each value
        assert ((got[name].float() - tensor.float()).abs() <= step).all(), name


def test_update_that_cannot_be_placed_falls_back_to_peft(moe_bases, tmp_path):
    """An update the conversion's key renaming cannot place (here a plain matrix update on a fused expert
    parameter) is never written unmerged: `written_updates` refuses it, and export merges through PEFT."""
    base, adapters = moe_bases("mixtral")
    config = FAMILIES["mixtral"].config.from_pretrained(base)
    model = merged_weights.skeleton(FAMILIES["mixtral"], config, torch.float32)
    weights = merged_weights.BaseWeights(str(base), str(base), model)
    plain = merged_weights.LoraUpdate(torch.ones(2, 32), torch.ones(128, 2), 1.0, False)
    with pytest.raises(merged_weights.UnsupportedForStreaming, match="experts.gate_up_proj"):
        weights.written_updates({"layers.0.mlp.experts.gate_up_proj": plain})
    wrong_experts = merged_weights.LoraUpdate(torch.ones(6, 32), torch.ones(128, 6), 1.0, False, experts=3)
    with pytest.raises(merged_weights.UnsupportedForStreaming, match="3 experts"):
        weights.written_updates({"layers.0.mlp.experts.gate_up_proj": wrong_experts})

    def unplaceable(self, updates):
        raise merged_weights.UnsupportedForStreaming("test")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(merged_weights.BaseWeights, "written_updates", unplaceable)
        out = export_checkpoint(str(base), str(tmp_path / "out"), adapters=adapters)
    expected = load_bidirectional(str(base), adapters, dtype=torch.float32)[0].state_dict()
    got = LLM2Vec.from_pretrained(out).model.state_dict()
    assert max((got[k] - expected[k]).abs().max().item() for k in expected) <= 1e-5
    check_checkpoint(out)  # transformers saves the loaded model in the checkpoint layout, which push accepts


def test_missing_expert_is_refused(moe_bases, tmp_path):
    """A base that lacks one expert's matrix is refused naming that matrix, as a loaded base with a missing tensor
    is named."""
    base, _ = moe_bases("qwen3_moe")
    broken = _copy_without_weights(base, tmp_path / "broken")
    with safe_open(str(base / "model.safetensors"), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if k != "model.layers.1.mlp.experts.3.up_proj.weight"}
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"incomplete: 1 tensors .*\(layers\.1\.mlp\.experts\.3\.up_proj\.weight\)"):
        export_checkpoint(str(broken), str(tmp_path / "out"))


def test_quantized_base_is_not_streamed():
    from transformers import AutoConfig

    config = AutoConfig.for_model("mixtral", quantization_config={"quant_method": "fp8"})
    with pytest.raises(merged_weights.UnsupportedForStreaming, match="quantized"):
        merged_weights.check_streamable(config)


@pytest.mark.slow
def test_sharded_moe_checkpoint_loads_on_every_path(moe_bases, tmp_path):
    base, adapters = moe_bases("qwen2_moe")
    one = _streamed_export(base, tmp_path / "one", adapters, max_length=48, doc_max_length=40)
    sharded = _streamed_export(base, tmp_path / "sharded", adapters, max_shard_size="40KB", max_length=48,
                               doc_max_length=40)
    assert_sharded_loads_on_every_path(one, sharded, tmp_path)


@pytest.mark.parametrize("family", [pytest.param(f, marks=[] if f == "mixtral" else [pytest.mark.slow])
                                    for f in sorted(MOE_SIZES)])
def test_push_validation_accepts_a_moe_export(moe_bases, tmp_path, family):
    """push's check matches the stored names to the parameters through transformers' conversion, as the loader
    does: the per-expert matrices of a streamed export count for the fused parameters they build."""
    base, adapters = moe_bases(family)
    summary = check_checkpoint(_streamed_export(base, tmp_path / "out", adapters))
    assert summary.tensors == len(stored_weights(tmp_path / "out"))


def _editstored_weights(folder: Path, edit) -> None:
    """Rewrites ``folder``'s model.safetensors with ``edit`` applied to its {name: tensor}."""
    tensors = stored_weights(folder)
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _drop(name):
    return lambda tensors: tensors.pop(name)


def _reshape(name, shape):
    return lambda tensors: tensors.update({name: tensors[name].reshape(shape).contiguous()})


def _add(name, like):
    return lambda tensors: tensors.update({name: tensors[like].clone()})


def _narrow_experts(suffix, rows):
    return lambda tensors: tensors.update({k: v[:rows].contiguous() for k, v in tensors.items()
                                           if ".mlp.experts." in k and k.endswith(suffix)})


@pytest.mark.parametrize(
    "family, breakage, needle",
    [
        ("mixtral", _drop("layers.1.block_sparse_moe.experts.2.w3.weight"),
         "1 of the 40 tensors the config asks for are not in its weights (e.g. "
         "layers.1.block_sparse_moe.experts.2.w3.weight)"),
        ("qwen2_moe", _drop("layers.0.mlp.experts.0.gate_proj.weight"),
         "are not in its weights (e.g. layers.0.mlp.experts.0.gate_proj.weight)"),
        # the same number of values, in another shape: a count of values would pass it, transformers' stack fails
        ("mixtral", _reshape("layers.1.block_sparse_moe.experts.1.w2.weight", (16, 32)),
         "tensor layers.1.block_sparse_moe.experts.1.w2.weight has shape [16, 32], the config asks for [32, 16]"),
        ("qwen2_moe", _reshape("layers.1.mlp.experts.3.up_proj.weight", (32, 16)),
         "tensor layers.1.mlp.experts.3.up_proj.weight has shape [32, 16], the config asks for [16, 32]"),
        # every expert's gate part narrowed alike: the tensors agree, the fused parameter would be too small
        ("qwen2_moe", _narrow_experts(".gate_proj.weight", 8),
         "do not build the parameters the config asks for: layers.0.mlp.experts.gate_up_proj (its 2 parts hold "
         "8 + 16 along dimension 1; config: [4, 32, 32])"),
        ("mixtral", _add("layers.0.block_sparse_moe.experts.4.w1.weight", "layers.0.block_sparse_moe.experts.0.w1.weight"),
         "1 tensors of its weights fit no parameter (e.g. layers.0.block_sparse_moe.experts.4.w1.weight)"),
    ],
    ids=["mixtral-missing-expert", "qwen2_moe-missing-expert", "mixtral-expert-shape", "qwen2_moe-expert-shape",
         "qwen2_moe-fused-size", "mixtral-extra-expert"],
)
def test_push_validation_refuses_a_broken_moe_export(moe_bases, tmp_path, family, breakage, needle):
    """What push's check refuses for every family it refuses in a mixture-of-experts export too, each tensor by
    the name it is stored under: a missing expert, an expert of another shape, an extra one."""
    base, _ = moe_bases(family)
    out = Path(_streamed_export(base, tmp_path / "out"))
    _editstored_weights(out, breakage)
    with pytest.raises(CheckpointError) as refused:
        check_checkpoint(out)
    assert needle in str(refused.value)


@pytest.mark.slow
def test_moe_export_memory_does_not_grow_with_depth(tmp_path):
    """Peak RSS of a Mixtral export with an adapter on attention, router and experts, 2 layers against 8: the 6
    extra layers add over 80 MB of bfloat16 experts, which a whole-model export would hold at once."""
    from transformers import AutoModelForCausalLM

    peaks, sizes = {}, {}
    for layers in (2, 8):
        fp32 = build_tiny_decoder(tmp_path / f"fp32-{layers}", "mixtral", hidden_size=256, num_layers=layers,
                                  intermediate_size=1280, num_local_experts=8, num_experts_per_tok=2,
                                  num_attention_heads=4, num_key_value_heads=4, head_dim=64)
        base = tmp_path / f"base-{layers}"
        AutoModelForCausalLM.from_pretrained(str(fp32), dtype=torch.bfloat16).save_pretrained(base)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (base / name).write_bytes((fp32 / name).read_bytes())
        adapter = _adapter(base, tmp_path / f"adapter-{layers}", 0, rank=4, alpha=8)
        peaks[layers] = export_peak_bytes(str(base), str(tmp_path / f"out-{layers}"), [adapter], streamed_only=True)
        sizes[layers] = sum(t.numel() * t.element_size() for t in stored_weights(tmp_path / f"out-{layers}").values())
    extra_weights = sizes[8] - sizes[2]
    assert extra_weights > 80 * 2**20
    # one tensor (the embedding, or one expert's matrix and its float32 update) is all that depth may add; a
    # whole-model export would add at least ``extra_weights``
    assert peaks[8] - peaks[2] < extra_weights / 4, (peaks, sizes)
