"""The conformance suite: every declared family, on a tiny random model of its own config, passes the same checks.

Per family (``FAMILY_CONFIGS`` gives each its tiny config: sliding windows of 4 tokens, which the encoder must widen
to the whole text; Llama-3.2's rope scaling; Granite's multipliers; small mixtures of experts):

- it is bidirectional (changing the last token changes the first token's state) under each attention backend,
  and the same weights without our flags are causal (the control);
- it equals an independent reference: transformers' native class, given an explicit all-visible 4D mask, one text
  at a time, mean-pooled here (not by our code);
- packed rows give the vectors of padded ones;
- after ``export``, AutoModel (remote code, with llm2vec_hf unimportable), SentenceTransformer and LLM2Vec give the
  same vectors, and transformers' native class loaded without remote code runs it bidirectionally;
- one MNTP step and one SimCSE step train: finite loss, every LoRA weight moved (the experts' too), and the
  merged adapters give the vectors of the unmerged ones.

Refused families are checked to be what their reason says. A family this transformers lacks is skipped with the
one-line reason `family_for` gives. The outcomes feed the support matrix (``docs/families.md``; see
``tests/modeling/conftest.py`` and ``llm2vec_hf.families``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

from helpers.attention import first_token_moves, skip_unless_supported
from helpers.processes import run_python
from llm2vec_hf import LLM2Vec
from llm2vec_hf.modeling.modeling_llm2vec import FAMILIES, REFUSED_FAMILIES, UNAVAILABLE_FAMILIES, family_for
from llm2vec_hf.modeling.packing import packed_groups
from llm2vec_hf.training.tiny_model import build_tiny_decoder

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
WINDOW = 4
LLAMA32_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
SMALL_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "decoder_sparse_step": 1}
#: family -> its tiny config's overrides. Adding a family: its declaration in modeling_llm2vec.py plus a row here.
FAMILY_CONFIGS: dict[str, dict] = {
    "llama": {"rope_scaling": LLAMA32_ROPE},  # Llama 3.2
    "mistral": {"sliding_window": WINDOW},
    "ministral": {"sliding_window": WINDOW},
    "mixtral": {"sliding_window": WINDOW, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2": {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
    "qwen2_moe": {**SMALL_MOE, "shared_expert_intermediate_size": 32},
    "qwen3": {},
    "qwen3_moe": SMALL_MOE,
    "gemma": {},
    "gemma2": {"sliding_window": WINDOW, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0},
    "gemma3_text": {"sliding_window": WINDOW, "sliding_window_pattern": 2},
    "phi3": {"sliding_window": WINDOW},
    "olmo2": {},
    "granite": {"embedding_multiplier": 2.0, "attention_multiplier": 0.5, "residual_multiplier": 0.7,
                "logits_scaling": 3.0},
    "smollm3": {"use_sliding_window": True, "sliding_window": WINDOW},
    "glm4": {},
    "minicpm3": {"num_key_value_heads": 4, "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
                 "qk_rope_head_dim": 4, "v_head_dim": 8, "head_dim": 12},  # multi-head latent attention
    "olmo": {},
    "olmo3": {"sliding_window": WINDOW},
    "cohere": {"use_qk_norm": True, "logit_scale": 0.5},
    "cohere2": {"sliding_window": WINDOW},  # its full-attention layers have no rotary embedding
    "starcoder2": {"sliding_window": WINDOW},
    "gpt_oss": {"sliding_window": WINDOW, "num_local_experts": 4, "num_experts_per_tok": 2},  # attention sinks
    "phi": {"partial_rotary_factor": 0.5},
    "exaone4": {"sliding_window": WINDOW},
    "ernie4_5": {},
    "hunyuan_v1_dense": {},
    "seed_oss": {},
    "apertus": {},  # xIELU activation, no gate projection
    "arcee": {},  # ReLU² MLP, no gate projection
    "dots1": {"n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "n_shared_experts": 1,
              "first_k_dense_replace": 1},
}
DECLARED = sorted(set(FAMILIES) | set(UNAVAILABLE_FAMILIES))
BACKENDS = ["eager", "sdpa"]
#: Texts of mixed lengths (1 to ~30 tokens): longer than the windows, short enough to pack.
TEXTS = [
    "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill.",
    "a",
    "Encoders read every token of a text at once.",
    "Sliding windows would hide the start of this sentence from its end.",
    "x y",
    "Mixture-of-experts layers route each token to two of their experts.",
]


def test_every_declared_family_has_a_conformance_row():
    assert set(FAMILY_CONFIGS) == set(DECLARED)


def require(family: str) -> None:
    if family in UNAVAILABLE_FAMILIES:
        pytest.skip(UNAVAILABLE_FAMILIES[family])


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """``zoo(family)`` -> the folder of the family's tiny ``…ForCausalLM`` (built once per session)."""
    root = tmp_path_factory.mktemp("zoo")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        require(family)
        if family not in built:
            built[family] = build_tiny_decoder(root / family, family, **FAMILY_CONFIGS[family])
        return built[family]

    return get


# --------------------------------------------------------------------------------------------------------------
# Attention: bidirectional under each backend, and exactly the independent reference
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", DECLARED)
@pytest.mark.slow
def test_bidirectional(zoo, family, backend):
    folder = zoo(family)
    skip_unless_supported(FAMILIES[family].model, backend)
    model = LLM2Vec.from_pretrained(str(folder), attn_implementation=backend).model
    assert first_token_moves(model, padded=False) and first_token_moves(model, padded=True)
    causal = AutoModel.from_pretrained(folder, attn_implementation=backend)
    assert not first_token_moves(causal.eval(), padded=False)  # the control: the probe can fail


def reference_vectors(folder: Path, backend: str, tokenizer) -> torch.Tensor:
    """Mean of each text's own token states from the native class with an all-visible additive 4D mask, one text
    at a time; BOS and other added tokens are not pooled, as LLM2Vec pools."""
    native = AutoModel.from_pretrained(folder, attn_implementation=backend).eval()
    assert not type(native).__name__.startswith("Bidirectional")
    vectors = []
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        own = tokenizer(text, add_special_tokens=False)["input_ids"]
        n_text = len(own)
        start = next(i for i in range(len(ids)) if ids[i : i + n_text] == own)
        all_visible = torch.zeros(1, 1, len(ids), len(ids))
        with torch.no_grad():
            hidden = native(input_ids=torch.tensor([ids]), attention_mask=all_visible).last_hidden_state[0]
        vectors.append(hidden[start : start + n_text].mean(0))
    return torch.stack(vectors)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", DECLARED)
@pytest.mark.slow
def test_equals_the_independent_reference(zoo, family, backend):
    folder = zoo(family)
    skip_unless_supported(FAMILIES[family].model, backend)
    l2v = LLM2Vec.from_pretrained(str(folder), attn_implementation=backend, pooling_mode="mean")
    got = l2v.encode(TEXTS, batch_size=4, show_progress_bar=False)
    expected = reference_vectors(folder, backend, l2v.tokenizer)
    assert (got - expected).abs().max().item() <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("family", DECLARED)
def test_flex_attention(zoo, family):
    """flex_attention runs on CPU through torch.compile: the first family compiles for ~40 s, Gemma2's soft-capping
    score function for ~2 min on a busy 2-core machine; the others reuse the compiled kernel."""
    if not hasattr(torch.nn.attention, "flex_attention"):
        pytest.skip("this torch has no flex_attention")
    folder = zoo(family)
    skip_unless_supported(FAMILIES[family].model, "flex_attention")
    flex = LLM2Vec.from_pretrained(str(folder), attn_implementation="flex_attention")
    if any(name.endswith(".sinks") for name, _ in flex.model.named_parameters()):
        pytest.skip("transformers runs attention sinks under flex attention on CUDA only")
    eager = LLM2Vec.from_pretrained(str(folder), attn_implementation="eager")
    assert first_token_moves(flex.model, padded=True)
    got = flex.encode(TEXTS, batch_size=8, show_progress_bar=False)
    assert (got - eager.encode(TEXTS, batch_size=8, show_progress_bar=False)).abs().max().item() <= 1e-4


def test_windows_are_widened_not_dropped(zoo):
    """A window of 4 tokens would change these vectors (the reference test above would fail with it); the layer
    types stay, so Gemma 3 keeps its per-layer-type rotary bases."""
    family = "gemma3_text"
    model = LLM2Vec.from_pretrained(str(zoo(family))).model
    assert model.config.sliding_window == model.config.max_position_embeddings
    assert "sliding_attention" in model.config.layer_types


def test_packed_rows_equal_padded_rows(zoo, family_or_skip):
    family = family_or_skip
    backend = "sdpa" if FAMILIES[family].model._supports_sdpa else "eager"  # soft-capped Gemma2: eager only
    l2v = LLM2Vec.from_pretrained(str(zoo(family)), attn_implementation=backend)
    lengths = [len(ids) for ids in l2v.tokenizer(TEXTS)["input_ids"]]
    calls = packed_groups(l2v.model, lengths, 8, packing=True)
    assert any(len(row) > 1 for rows in calls for row in rows)  # texts really share rows
    packed = l2v.encode(TEXTS, batch_size=8, packing=True, show_progress_bar=False)
    padded = l2v.encode(TEXTS, batch_size=8, packing=False, show_progress_bar=False)
    assert (packed - padded).abs().max().item() <= TOL


@pytest.fixture(params=DECLARED)
def family_or_skip(request):
    require(request.param)
    return request.param


# --------------------------------------------------------------------------------------------------------------
# Export: the three loading paths agree; the native class runs the export bidirectionally without remote code
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def zoo_exports(zoo, tmp_path_factory):
    """``(folders, remote)``: every available family's export, and what its remote code computes for ``TEXTS``
    (one fresh process for all families, llm2vec_hf unimportable there); a family whose remote code failed
    maps to the error's last line."""
    from llm2vec_hf.checkpoint.export import export_checkpoint

    root = tmp_path_factory.mktemp("zoo-exports")
    folders = {family: export_checkpoint(str(zoo(family)), str(root / family), pooling_mode="mean")
               for family in sorted(FAMILIES)}
    request, out = root / "request.json", root / "remote.npz"
    request.write_text(json.dumps({"folders": folders, "texts": TEXTS}))
    code = f"""
import json, traceback, numpy as np
from transformers import AutoModel, AutoTokenizer
request = json.load(open({str(request)!r}))
vectors, errors = {{}}, {{}}
for family, folder in request["folders"].items():
    try:
        model = AutoModel.from_pretrained(folder, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        vectors[family] = model.encode(request["texts"], AutoTokenizer.from_pretrained(folder), batch_size=4).numpy()
    except Exception:
        errors[family] = traceback.format_exc().strip().splitlines()[-1]
np.savez({str(out)!r}, **vectors)
json.dump(errors, open({str(out)!r} + ".errors.json", "w"))
"""
    proc = run_python(code, block_llm2vec_hf=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = dict(np.load(out))
    remote.update(json.loads(Path(str(out) + ".errors.json").read_text()))
    return folders, remote


@pytest.mark.slow
def test_export_paths_give_the_same_vectors(zoo_exports, family_or_skip):
    from sentence_transformers import SentenceTransformer

    family = family_or_skip
    folders, remote = zoo_exports
    expected = LLM2Vec.from_pretrained(folders[family]).encode(TEXTS, batch_size=4, show_progress_bar=False).numpy()
    assert not isinstance(remote[family], str), remote[family]
    assert np.abs(remote[family] - expected).max() <= TOL
    st = SentenceTransformer(folders[family], trust_remote_code=True, device="cpu")
    assert np.abs(st.encode(TEXTS, batch_size=4) - expected).max() <= TOL


@pytest.mark.slow
def test_native_class_runs_the_export_bidirectionally(zoo_exports, family_or_skip):
    """What stock sentence-transformers, TEI's and vLLM's transformers backends load: no remote code."""
    folders, _ = zoo_exports
    native = AutoModel.from_pretrained(folders[family_or_skip]).eval()
    assert not type(native).__name__.startswith("Bidirectional")
    assert first_token_moves(native, padded=True)
    ours = LLM2Vec.from_pretrained(folders[family_or_skip]).model
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])
    with torch.no_grad():
        difference = native(input_ids=ids).last_hidden_state - ours(input_ids=ids).last_hidden_state
    assert difference.abs().max().item() <= TOL


# --------------------------------------------------------------------------------------------------------------
# Training: one MNTP step and one SimCSE step
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    from llm2vec_hf.training.tiny_model import english_corpus

    path = tmp_path_factory.mktemp("zoo-corpus") / "corpus.txt"
    path.write_text("\n".join(english_corpus()[:200]) + "\n")
    return path


def one_step(stage: str, base: Path, corpus: Path, output: Path, adapters=(), **overrides):
    from llm2vec_hf.training import parse_recipe, run_training
    from llm2vec_hf.training import run

    with pytest.MonkeyPatch.context() as patch:  # no loss-curve PNG: drawing it costs more than the step
        patch.setattr(run, "write_loss_curve", lambda *args, **kwargs: None)
        return run_training(parse_recipe(step_recipe(stage, base, corpus, output, adapters, **overrides)))


def step_recipe(stage: str, base: Path, corpus: Path, output: Path, adapters=(), **overrides) -> dict:

    values = {"stage": stage, "model_name_or_path": str(base), "train_file": str(corpus), "max_seq_length": 32,
              "lora_r": 4, "output_dir": str(output), "per_device_train_batch_size": 4, "learning_rate": 1e-2,
              "max_steps": 1, "logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": 7,
              "use_cpu": True, "disable_tqdm": True, "max_train_samples": 64}
    if stage == "mntp":
        values.update(max_eval_samples=4, per_device_eval_batch_size=4, eval_strategy="no")
    if adapters:
        values["peft_model_name_or_path"] = [str(a) for a in adapters]
    values.update(overrides)
    return values


def logged_losses(run) -> list[float]:
    """The training losses the Trainer logged (``logging_steps`` 1: one per step)."""
    return [entry["loss"] for entry in run.trainer.state.log_history if "loss" in entry]


def check_lora_moved(adapter: Path, family: str) -> None:
    """LoRA's B matrices start at zero: after one step every one of them has moved, the experts' included."""
    from safetensors.torch import load_file

    weights = load_file(adapter / "adapter_model.safetensors")
    b_matrices = {k: v for k, v in weights.items() if "lora_B" in k}
    assert b_matrices
    unmoved = [k for k, v in b_matrices.items() if not v.abs().max().item() > 0]
    assert not unmoved, unmoved[:3]
    if FAMILIES[family].expert_parameters:
        assert any("experts" in k for k in b_matrices), sorted(b_matrices)[:5]


@pytest.fixture(scope="session")
def trained(zoo, corpus, tmp_path_factory):
    """``trained(family)`` -> ``(mntp_adapter, simcse_adapter, mntp_losses, simcse_losses)``, one step each."""
    root = tmp_path_factory.mktemp("zoo-trained")
    done = {}

    def get(family: str):
        if family not in done:
            base = zoo(family)
            mntp = one_step("mntp", base, corpus, root / family / "mntp")
            simcse = one_step("simcse", base, corpus, root / family / "simcse", adapters=[root / family / "mntp"])
            done[family] = (root / family / "mntp", root / family / "simcse", logged_losses(mntp),
                            logged_losses(simcse))
        return done[family]

    return get


@pytest.mark.slow
def test_one_mntp_step_trains(trained, family_or_skip):
    adapter, _, mntp_losses, _ = trained(family_or_skip)
    assert mntp_losses and all(math.isfinite(loss) for loss in mntp_losses)
    check_lora_moved(adapter, family_or_skip)


@pytest.mark.slow
def test_one_contrastive_step_trains(trained, zoo, family_or_skip):
    """And the adapters merged (as export merges them) give the vectors of the unmerged PEFT model."""
    from llm2vec_hf.loading.adapters import apply_adapter
    from llm2vec_hf.loading.models import load_bidirectional
    from llm2vec_hf.modeling.encoding_settings import resolve_encoding
    from llm2vec_hf.modeling.modeling_llm2vec import encode_with

    family = family_or_skip
    mntp, simcse, _, simcse_losses = trained(family)
    assert simcse_losses and all(math.isfinite(loss) for loss in simcse_losses)
    check_lora_moved(simcse, family)
    merged, tokenizer, _ = load_bidirectional(str(zoo(family)), [str(mntp), str(simcse)])
    unmerged = apply_adapter(load_bidirectional(str(zoo(family)), [str(mntp)])[0], str(simcse), merge=False)
    settings = resolve_encoding(merged.config, tokenizer)
    a = encode_with(merged, tokenizer, TEXTS, settings, packing=False)
    b = encode_with(unmerged, tokenizer, TEXTS, settings, packing=False)
    base, _, _ = load_bidirectional(str(zoo(family)))
    c = encode_with(base, tokenizer, TEXTS, settings, packing=False)
    assert (a - b).abs().max().item() <= 1e-4
    assert (a - c).abs().max().item() > 1e-4  # the adapters act


def test_router_settings_reach_the_mntp_loss(zoo, corpus, tmp_path):
    """output_router_logits adds router_aux_loss_coef times the load-balancing loss: the first step's loss grows
    with the coefficient (same data, same seed)."""
    family = next((f for f in ("qwen3_moe", "mixtral") if f in FAMILIES), None)
    if family is None:
        pytest.skip("no mixture-of-experts family in this transformers")
    plain = logged_losses(one_step("mntp", zoo(family), corpus, tmp_path / "a"))
    weighted = logged_losses(one_step("mntp", zoo(family), corpus, tmp_path / "b", output_router_logits=True,
                                      router_aux_loss_coef=10.0))
    assert weighted[0] > plain[0] + 1.0


def test_router_settings_are_refused_where_they_do_nothing(zoo, corpus, tmp_path):
    from llm2vec_hf.training import parse_recipe

    with pytest.raises(ValueError, match="not a mixture-of-experts model"):
        one_step("mntp", zoo("llama"), corpus, tmp_path / "dense", router_aux_loss_coef=0.01)
    with pytest.raises(ValueError, match="output_router_logits"):
        parse_recipe({"stage": "simcse", "model_name_or_path": "x", "train_file": "x", "output_dir": "x",
                      "output_router_logits": True, "use_cpu": True})


# --------------------------------------------------------------------------------------------------------------
# Refused families and families this transformers lacks: one line that says why
# --------------------------------------------------------------------------------------------------------------
MAMBA2 = {"mamba_n_heads": 8, "mamba_d_head": 8, "mamba_n_groups": 1, "mamba_d_state": 8, "mamba_expand": 2}
DELTA_NET = {"layer_types": ["linear_attention", "full_attention"], "linear_num_value_heads": 4,
             "linear_num_key_heads": 2, "linear_key_head_dim": 8, "linear_value_head_dim": 8}
TINY_MOE = {"num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 32}
#: Refused family -> (its tiny config's overrides, the layer the probe reads): a token-mixing layer of the first
#: decoder layer, whose input at the first token is the same in both runs.
REFUSED_PROBES: dict[str, tuple[dict, str]] = {
    "mamba": ({}, "layers.0.mixer"),
    "falcon_mamba": ({}, "layers.0.mixer"),
    "mamba2": ({"num_heads": 8, "head_dim": 8, "expand": 2, "n_groups": 1, "state_size": 8}, "layers.0.mixer"),
    "rwkv": ({}, "blocks.0.attention"),
    "recurrent_gemma": ({"block_types": ["recurrent", "attention"], "lru_width": 32}, "layers.0.temporal_block"),
    "jamba": ({"attn_layer_offset": 1, "attn_layer_period": 2, "expert_layer_offset": 1, "expert_layer_period": 2,
               "num_experts": 2, "mamba_d_state": 8, "mamba_dt_rank": 4}, "layers.0.mamba"),
    "bamba": ({**MAMBA2, "attn_layer_indices": [1]}, "layers.0.mamba"),
    "falcon_h1": ({**MAMBA2, "mamba_d_ssm": 64}, "layers.0.mamba"),  # Mamba beside attention in every layer
    "granitemoehybrid": ({**MAMBA2, "layer_types": ["mamba", "attention"], "num_local_experts": 2,
                          "num_experts_per_tok": 1}, "layers.0.mamba"),
    "nemotron_h": ({"mamba_num_heads": 8, "mamba_head_dim": 8, "n_groups": 1, "ssm_state_size": 8, "expand": 2,
                    "layers_block_type": ["mamba", "attention"]}, "layers.0.mixer"),
    "zamba": ({"use_mamba_kernels": False, "num_hidden_layers": 4, "attn_layer_period": 2, "attn_layer_offset": 1,
               "mamba_d_state": 8, "mamba_dt_rank": 4, "n_mamba_heads": 2,
               "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"]},
              "layers.0.mamba"),
    "zamba2": ({**MAMBA2, "layers_block_type": ["mamba", "hybrid"], "num_mem_blocks": 1, "use_mem_rope": True},
               "layers.0.mamba"),
    "lfm2": ({"layer_types": ["conv", "full_attention"]}, "layers.0.conv"),
    "lfm2_moe": ({"layer_types": ["conv", "full_attention"], **TINY_MOE, "num_dense_layers": 1}, "layers.0.conv"),
    "lfm3": ({"layer_types": ["conv", "full_attention"]}, "layers.0.conv"),
    "qwen3_next": ({**DELTA_NET, **TINY_MOE, "shared_expert_intermediate_size": 32}, "layers.0.linear_attn"),
    "qwen3_5_text": (DELTA_NET, "layers.0.linear_attn"),
    "qwen3_5_moe_text": ({**DELTA_NET, **TINY_MOE, "shared_expert_intermediate_size": 32}, "layers.0.linear_attn"),
    "qwen4_exp_text": ({**DELTA_NET, "indexer_budget": 8, "indexer_compress_ratio": 2, "indexer_n_heads": 2,
                        "indexer_kv_heads": 1, "indexer_head_dim": 8}, "layers.0.linear_attn"),
    "kimi_linear": ({"num_key_value_heads": 4, "linear_attn_config": {"full_attn_layers": [2], "kda_layers": [1],
                                                                      "head_dim": 8, "num_heads": 4}},
                    "layers.0.self_attn"),
    "olmo_hybrid": ({}, "layers.0.linear_attn"),
    "lara_mini": ({}, "layers.0.linear_attn"),
    "bailing_hybrid": ({"num_key_value_heads": 4, "layer_types": ["linear_attention", "full_attention"]},
                       "layers.0.self_attn"),
    "minimax": ({"layer_types": ["linear_attention", "full_attention"], "num_local_experts": 2,
                 "num_experts_per_tok": 1}, "layers.0.self_attn"),
    "openai-gpt": ({"n_embd": 32, "n_layer": 2, "n_head": 4}, "h.0.attn"),
    "llama4_text": ({}, "layers.0.self_attn"),
}
#: Refused as left to right from transformers' code, without a probe: no tiny model of it runs here.
STATED_LEFT_TO_RIGHT = {"xlstm"}
TINY = {"vocab_size": 500, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 256,
        "pad_token_id": 0}


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def causal_lm_families() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def test_every_causal_lm_family_is_classified():
    """Every causal-LM family of the installed transformers is declared, read through its text tower
    (`TEXT_TOWERS`, tests/modeling/test_text_tower.py) or refused with its reason: a new transformers release
    with a new family fails here until someone decides."""
    from llm2vec_hf.modeling.modeling_llm2vec import TEXT_TOWERS

    classified = set(FAMILIES) | set(UNAVAILABLE_FAMILIES) | set(REFUSED_FAMILIES) | set(TEXT_TOWERS)
    unclassified = causal_lm_families() - classified
    assert not unclassified, sorted(unclassified)
    assert not set(FAMILIES) & set(REFUSED_FAMILIES)


def test_every_left_to_right_refusal_is_measured():
    """A reason that says a layer reads left to right has a probe below, or is named as stated."""
    left_to_right = {f for f, reason in REFUSED_FAMILIES.items() if "left to right" in reason or "is_causal" in reason}
    assert left_to_right == set(REFUSED_PROBES) | STATED_LEFT_TO_RIGHT


def edited_runs(model, layer: str, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer``'s output for 12 random tokens, and for the same tokens with the one at ``position`` changed."""
    outputs = []
    hook = model.get_submodule(layer).register_forward_hook(
        lambda module, args, output: outputs.append(output if torch.is_tensor(output) else output[0]))
    torch.manual_seed(0)
    ids = torch.randint(10, 400, (1, 12))
    edited = ids.clone()
    edited[0, position] = 7
    with torch.no_grad():
        model(input_ids=ids)
        model(input_ids=edited)
    hook.remove()
    return outputs[0], outputs[1]


@pytest.mark.parametrize("model_type", sorted(REFUSED_PROBES))
@pytest.mark.slow
def test_refused_families_cannot_see_ahead(model_type):
    """The measured reason: with every flag set for bidirectional attention, the probed token-mixing layer's state
    of the first token does not change when the last token does, though its state of a token does change when the
    token before it does (it mixes tokens, left to right)."""
    from transformers import CONFIG_MAPPING

    from llm2vec_hf.modeling.modeling_llm2vec import make_config_bidirectional

    if model_type not in CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers_version()} has no {model_type}")
    overrides, layer = REFUSED_PROBES[model_type]
    config = AutoConfig.for_model(model_type, **{**TINY, **overrides})
    make_config_bidirectional(config)
    torch.manual_seed(0)
    model = AutoModel.from_config(config, attn_implementation="eager").eval()
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
    before, after = edited_runs(model, layer, position=-1)
    assert torch.equal(before[0, 0], after[0, 0])
    before, after = edited_runs(model, layer, position=-2)
    assert not torch.equal(before[0, -1], after[0, -1])  # the probe reads a layer that mixes tokens
    with pytest.raises(ValueError, match="is refused") as error:
        family_for(config)
    assert "\n" not in str(error.value)


ENCODER_REASON = REFUSED_FAMILIES["bert"]
#: Encoders whose tiny model needs more than the shared tiny config (or a language id) to run.
ENCODER_OVERRIDES = {"xmod": None, "reformer": None, "xlnet": None}


@pytest.mark.parametrize("model_type", sorted(f for f, r in REFUSED_FAMILIES.items() if r == ENCODER_REASON))
def test_encoders_already_attend_both_ways(model_type):
    """The native class, without any flag of ours, already changes the first token's state with the last token."""
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers_version()} has no {model_type}")
    if model_type in ENCODER_OVERRIDES:
        pytest.skip(f"{model_type}'s tiny model needs settings of its own; refused as an encoder by its design")
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.for_model(model_type, **TINY)).eval()
    ids = torch.randint(10, 400, (1, 12))
    edited = ids.clone()
    edited[0, -1] = 7
    with torch.no_grad():
        first = model(input_ids=ids).last_hidden_state[0, 0]
        changed = model(input_ids=edited).last_hidden_state[0, 0]
    assert not torch.equal(first, changed)


@pytest.mark.parametrize("model_type", sorted(f for f, r in REFUSED_FAMILIES.items()
                                              if "encoder-decoder" in r or "multimodal" in r))
def test_encoder_decoders_and_multimodal_types_are_what_they_say(model_type):
    """The config class says it: an encoder-decoder (or a decoder that reads an encoder's output), or a checkpoint
    type with a vision or audio part."""
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers_version()} has no {model_type}")
    import inspect

    config_class = CONFIG_MAPPING[model_type]
    keys = set(inspect.signature(config_class.__init__).parameters) | set(getattr(config_class, "sub_configs", {}))
    try:
        config = config_class()
        keys |= set(vars(config)) | ({"is_encoder_decoder"} if config.is_encoder_decoder else set())
    except TypeError:  # transformers 5.2's MusicGen configs cannot be built without their sub-configs
        pass
    if "encoder-decoder" in REFUSED_FAMILIES[model_type]:
        assert any(part in key for key in keys for part in ("is_encoder_decoder", "cross_attention", "encoder")), keys
    else:
        assert any(part in key for key in keys for part in ("vision", "audio", "image", "patch")), sorted(keys)


def test_a_family_this_transformers_lacks_is_one_line_at_load(tmp_path, monkeypatch, capsys):
    """transformers without the family cannot even read its config.json: the error names the version it needs."""
    from llm2vec_hf import cli
    from llm2vec_hf.modeling import modeling_llm2vec

    reason = modeling_llm2vec.declare("futurelm", "FutureLM", since="5.99.0")
    assert isinstance(reason, str) and "5.99.0" in reason
    monkeypatch.setitem(modeling_llm2vec.UNAVAILABLE_FAMILIES, "futurelm", reason)
    folder = tmp_path / "futurelm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "futurelm", "architectures": ["FutureLM"]}))
    assert cli.main(["export", str(folder), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs transformers >= 5.99.0" in err


def test_unsupported_families_fail_in_one_line():
    for model_type, reason in {**REFUSED_FAMILIES, **UNAVAILABLE_FAMILIES}.items():
        config = type("Config", (), {"model_type": model_type})()  # family_for reads only the model_type
        with pytest.raises(ValueError) as error:
            family_for(config)
        assert "\n" not in str(error.value) and reason in str(error.value)
