"""A checkpoint or adapter that is missing, corrupt, incomplete or made for another base is refused with an error
that names the problem; weights are complete or refused, never randomly initialised."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers.cli import assert_one_line, run_cli
from helpers.weights import rewrite_weights
from llm2vec_hf import LLM2Vec
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.errors import AdapterMismatchError, CheckpointError
from llm2vec_hf.training.tiny_model import build_tiny_decoder


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="No such model folder"):
        LLM2Vec.from_pretrained(str(tmp_path / "nope"))


def test_unknown_repo_id_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="local folder or a Hub repo id"):
        LLM2Vec.from_pretrained("nobody/does-not-exist")


def test_folder_without_config(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        LLM2Vec.from_pretrained(str(tmp_path / "weights"))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_corrupt_weights(tiny_bases, tmp_path, damage):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_bases["llama"], folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="Could not load the weights"):
        LLM2Vec.from_pretrained(str(folder))


def test_pickle_only_weights_are_refused(tiny_bases, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bases["llama"], folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        LLM2Vec.from_pretrained(str(folder))


def test_unsupported_architecture_lists_supported(tmp_path):
    """An architecture with no verdict lists the supported ones; a classified one says why it is refused."""
    from llm2vec_hf import FAMILIES
    from llm2vec_hf.modeling.modeling_llm2vec import REFUSED_FAMILIES

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "albert"}))
    with pytest.raises(ValueError, match="supports: " + ", ".join(sorted(FAMILIES))):
        LLM2Vec.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match=re.escape(REFUSED_FAMILIES["gpt2"])):
        LLM2Vec.from_pretrained(str(tmp_path))


def save_lora(base_folder, out, target_modules=("q_proj", "v_proj")):
    from peft import LoraConfig, get_peft_model

    from llm2vec_hf.loading.models import load_bidirectional

    model, _, _ = load_bidirectional(str(base_folder))
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=list(target_modules), init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


def test_adapter_for_another_base_is_refused(tiny_bases, tmp_path):
    wider = build_tiny_decoder(tmp_path / "wider", "llama", hidden_size=64)
    adapter = save_lora(wider, tmp_path / "adapter-wide")
    with pytest.raises(AdapterMismatchError, match="another base"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))


def test_adapter_whose_modules_do_not_exist_is_refused(tiny_bases, tmp_path):
    adapter = save_lora(tiny_bases["llama"], tmp_path / "adapter")
    weights_file = adapter / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    renamed = {k.replace("layers.", "blocks."): v for k, v in load_file(weights_file).items()}
    save_file(renamed, weights_file)
    with pytest.raises(AdapterMismatchError, match="match no module"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))


def test_adapter_without_its_lora_a_tensors_is_refused_everywhere(tiny_bases, tmp_path, capsys):
    adapter = save_lora(tiny_bases["llama"], tmp_path / "adapter")
    rewrite_weights(adapter / "adapter_model.safetensors", keep=lambda k: "lora_A" not in k)
    with pytest.raises(CheckpointError, match=r"incomplete: 4 of the 8 tensors .*lora_A"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))
    with pytest.raises(CheckpointError, match="incomplete"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter), merge_peft=True)
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", tmp_path / "out", "--adapter", adapter], capsys)
    assert_one_line(code, err, "lora_A", "randomly initialised")
    assert not (tmp_path / "out").exists()


def test_adapter_missing_one_tensor_is_refused(tiny_bases, tmp_path):
    adapter = save_lora(tiny_bases["llama"], tmp_path / "adapter")
    dropped = sorted(load_file(adapter / "adapter_model.safetensors"))[-1]
    rewrite_weights(adapter / "adapter_model.safetensors", keep=lambda k: k != dropped)
    with pytest.raises(CheckpointError, match="1 of the 8"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))


@pytest.mark.parametrize("damage", ["missing-layer", "missing-norm", "extra-layer", "wrong-shape"])
def test_base_checkpoint_that_does_not_match_its_config_is_refused(tiny_bases, tmp_path, capsys, damage):
    folder = tmp_path / "base"
    shutil.copytree(tiny_bases["llama"], folder)
    weights = folder / "model.safetensors"
    if damage == "missing-layer":
        rewrite_weights(weights, keep=lambda k: ".layers.1." not in k)
        needle = "layers.1."
    elif damage == "missing-norm":
        rewrite_weights(weights, keep=lambda k: k != "model.norm.weight")
        needle = "norm.weight"
    elif damage == "extra-layer":  # a checkpoint with more layers than its config: silently truncated before
        extra = {k.replace(".layers.1.", ".layers.2."): v for k, v in load_file(weights).items() if ".layers.1." in k}
        rewrite_weights(weights, extra=extra)
        needle = "layers.2."
    else:
        state = load_file(weights)
        state["model.norm.weight"] = torch.ones(31)
        save_file(state, weights, metadata={"format": "pt"})
        needle = "norm.weight"
    with pytest.raises(CheckpointError, match=re.escape(needle)):
        LLM2Vec.from_pretrained(str(folder))
    code, _, err = run_cli(["export", folder, "--output", tmp_path / "out"], capsys)
    assert_one_line(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_exported_checkpoint_missing_a_tensor_is_refused(exported, tmp_path):
    folder = tmp_path / "exported"
    shutil.copytree(exported("llama"), folder)
    rewrite_weights(folder / "model.safetensors", keep=lambda k: "layers.0.mlp.up_proj" not in k)
    with pytest.raises(CheckpointError, match="layers.0.mlp.up_proj.weight"):
        LLM2Vec.from_pretrained(str(folder))
    # the checkpoint's own remote code refuses it too, for AutoModel and sentence-transformers
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    with pytest.raises(OSError, match="layers.0.mlp.up_proj.weight"):
        AutoModel.from_pretrained(str(folder), trust_remote_code=True)
    with pytest.raises(OSError, match="randomly initialised"):
        SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")


def test_tied_embeddings_are_not_reported_missing(tmp_path):
    """A base with tie_word_embeddings stores no lm_head: loading it as encoder, as MNTP model and exporting it
    must not be refused, and the MNTP head must be the embeddings."""
    from llm2vec_hf.loading.models import load_bidirectional

    base = build_tiny_decoder(tmp_path / "tied", "llama", tie_word_embeddings=True)
    assert not any(k.startswith("lm_head") for k in load_file(base / "model.safetensors"))
    mntp, _, _ = load_bidirectional(str(base), for_mntp=True)
    assert torch.equal(mntp.lm_head.weight, mntp.model.embed_tokens.weight)
    out = export_checkpoint(str(base), str(tmp_path / "out"))
    assert LLM2Vec.from_pretrained(out).encode(["fine"], show_progress_bar=False).shape == (1, 32)


def test_causal_baseline_of_a_decoder_checkpoint_loads(tiny_bases):
    """The native AutoModel (enable_bidirectional=False) has no use for the decoder's lm_head: not an error."""
    model = LLM2Vec.from_pretrained(str(tiny_bases["llama"]), enable_bidirectional=False)
    assert model.encode(["fine"], show_progress_bar=False).shape == (1, 32)


def test_adapter_of_the_wrong_hidden_size_is_one_line(tiny_bases, tmp_path, capsys):
    wider = build_tiny_decoder(tmp_path / "wider", "llama", hidden_size=64)
    adapter = save_lora(wider, tmp_path / "adapter-wide")
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", tmp_path / "out", "--adapter", adapter], capsys)
    assert_one_line(code, err, "another base model", "[2, 64]", "[2, 32]")


def test_adapter_of_another_family_is_refused_by_export_as_by_train(tiny_bases, tmp_path, capsys):
    """A Qwen2 adapter has the module names and, at the same width, the shapes of a Llama one."""
    adapter = save_lora(tiny_bases["qwen2"], tmp_path / "qwen2-adapter")
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", tmp_path / "out", "--adapter", adapter], capsys)
    assert_one_line(code, err, "another base model", "qwen2", "llama")
    with pytest.raises(AdapterMismatchError, match="qwen2"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))
    # and with the class record gone, the base named in the adapter config still tells
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["auto_mapping"] = None
    config_path.write_text(json.dumps(config))
    with pytest.raises(AdapterMismatchError, match="qwen2"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))


def test_checkpoint_without_tokenizer_files_is_one_line(tiny_bases, tmp_path, capsys):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_bases["llama"], folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    code, _, err = run_cli(["export", folder, "--output", tmp_path / "out"], capsys)
    assert_one_line(code, err, "no tokenizer files")
    assert "sentencepiece" not in err.lower()
