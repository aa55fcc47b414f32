"""Export at the sizes people run (docs/architecture.md, "Export at scale"): the weights are streamed tensor by
tensor in the base's own dtype, sharded as transformers shards them, and merged as PEFT merges them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm2vec_hf import LLM2Vec
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.loading.models import load_bidirectional
from llm2vec_hf.training.tiny_model import build_tiny_decoder

from helpers.processes import export_peak_bytes
from helpers.sharded import assert_sharded_loads_on_every_path, stored_weights

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _adapter(base, folder, seed, rank=4, causal_lm_keys=True):
    """A random LoRA adapter on all seven projections, trained-on-a-…ForCausalLM layout (as the official ones)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=PROJECTIONS, init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def bf16_base(tmp_path_factory):
    """A tiny Mistral saved in bfloat16 (its config says so), with two adapters (MNTP-like, supervised-like)."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("bf16")
    fp32 = build_tiny_decoder(root / "fp32", "mistral", hidden_size=64)
    model = AutoModelForCausalLM.from_pretrained(str(fp32), dtype=torch.bfloat16)
    model.save_pretrained(root / "base")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (fp32 / name).exists():
            (root / "base" / name).write_bytes((fp32 / name).read_bytes())
    return root / "base", [_adapter(root / "base", root / "a1", 1), _adapter(root / "base", root / "a2", 2)]


def test_default_dtype_is_the_bases_and_dtype_overrides(bf16_base, tmp_path):
    base, adapters = bf16_base
    out = export_checkpoint(str(base), str(tmp_path / "default"), adapters=adapters)
    assert {t.dtype for t in stored_weights(out).values()} == {torch.bfloat16}
    assert json.loads((Path(out) / "config.json").read_text())["dtype"] == "bfloat16"
    out32 = export_checkpoint(str(base), str(tmp_path / "fp32"), adapters=adapters, dtype="float32")
    assert {t.dtype for t in stored_weights(out32).values()} == {torch.float32}
    assert LLM2Vec.from_pretrained(out32).model.dtype == torch.float32


def test_dtype_from_the_files_when_the_config_names_none(bf16_base, tmp_path):
    base, _ = bf16_base
    copy = tmp_path / "base"
    copy.mkdir()
    for entry in base.iterdir():
        (copy / entry.name).write_bytes(entry.read_bytes())
    config = json.loads((copy / "config.json").read_text())
    config.pop("dtype", None), config.pop("torch_dtype", None)
    (copy / "config.json").write_text(json.dumps(config))
    out = export_checkpoint(str(copy), str(tmp_path / "out"))
    assert {t.dtype for t in stored_weights(out).values()} == {torch.bfloat16}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_streamed_merge_equals_peft_merge_and_unload(bf16_base, tmp_path, dtype):
    """Same weights as loading the base in ``dtype`` and merging each adapter with PEFT's merge_and_unload (the
    official path), bit for bit: `merged_weights.MERGE_ROUNDING` rounds after each adapter as PEFT does."""
    base, adapters = bf16_base
    out = export_checkpoint(str(base), str(tmp_path / "out"), adapters=adapters, dtype=dtype)
    model, _, _ = load_bidirectional(str(base), adapters, dtype=dtype)
    reference = model.state_dict()
    streamed = stored_weights(out)
    assert set(streamed) == set(reference)
    differing = [k for k in reference if not torch.equal(streamed[k], reference[k])]
    assert differing == []
    plain = stored_weights(export_checkpoint(str(base), str(tmp_path / "plain"), dtype=dtype))
    assert not torch.equal(plain["layers.0.mlp.down_proj.weight"], streamed["layers.0.mlp.down_proj.weight"])


@pytest.mark.slow
def test_sharded_checkpoint_loads_on_every_path(bf16_base, tmp_path):
    from llm2vec_hf.checkpoint.validation import check_checkpoint

    base, adapters = bf16_base
    one = export_checkpoint(str(base), str(tmp_path / "one"), adapters=adapters, dtype="float32", max_length=48,
                            doc_max_length=40)
    sharded = export_checkpoint(str(base), str(tmp_path / "sharded"), adapters=adapters, dtype="float32",
                                max_shard_size="100KB", max_length=48, doc_max_length=40)
    assert_sharded_loads_on_every_path(one, sharded, tmp_path)
    summary = check_checkpoint(sharded)  # what push validates before uploading
    assert summary is not None


@pytest.mark.slow
def test_export_memory_does_not_grow_with_depth(tmp_path):
    """Peak RSS of an export (in a fresh process) of a 2-layer and an 8-layer base, each with a rank-256
    adapter: the 6 extra layers add 84 MB of bfloat16 weights, which a whole-model export holds at once, and 110 MB
    of float32 adapter factors, which an export that reads the adapter whole holds at once."""
    from transformers import AutoModelForCausalLM

    peaks = {}
    for layers in (2, 8):
        fp32 = build_tiny_decoder(tmp_path / f"fp32-{layers}", "llama", hidden_size=512, num_layers=layers,
                                  intermediate_size=4096, num_attention_heads=8, num_key_value_heads=8, head_dim=64)
        base = tmp_path / f"base-{layers}"
        AutoModelForCausalLM.from_pretrained(str(fp32), dtype=torch.bfloat16).save_pretrained(base)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (base / name).write_bytes((fp32 / name).read_bytes())
        adapter = _adapter(base, tmp_path / f"adapter-{layers}", 0, rank=256)
        peaks[layers] = export_peak_bytes(str(base), str(tmp_path / f"out-{layers}"), [adapter])
        size = sum(t.numel() * t.element_size() for t in stored_weights(tmp_path / f"out-{layers}").values())
        peaks[f"weights-{layers}"] = size
    extra_weights = peaks["weights-8"] - peaks["weights-2"]
    assert extra_weights > 80 * 2**20
    # the largest tensor (embedding or an MLP matrix, 4 MB in bfloat16, 8 MB in float32 during a merge) is all
    # that depth may add; a whole-model export would add at least ``extra_weights``
    assert peaks[8] - peaks[2] < extra_weights / 4, peaks


def test_bfloat16_checkpoint_loads_as_bfloat16_on_every_path(bf16_base, tmp_path):
    """No float32 detour at load: LLM2Vec, AutoModel (remote code) and SentenceTransformer keep the checkpoint's
    dtype unless asked for another."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    base, adapters = bf16_base
    out = export_checkpoint(str(base), str(tmp_path / "out"), adapters=adapters)
    assert LLM2Vec.from_pretrained(out).model.dtype == torch.bfloat16
    assert LLM2Vec.from_pretrained(out, dtype=torch.float32).model.dtype == torch.float32
    assert AutoModel.from_pretrained(out, trust_remote_code=True).dtype == torch.bfloat16
    st = SentenceTransformer(out, trust_remote_code=True)
    assert st[0].auto_model.dtype == torch.bfloat16
    assert st.encode(["a text"], convert_to_tensor=True).dtype == torch.bfloat16
    st32 = SentenceTransformer(out, trust_remote_code=True, model_kwargs={"dtype": torch.float32})
    assert st32[0].auto_model.dtype == torch.float32
