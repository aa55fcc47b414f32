"""Bad input gets an error that names the problem (or a correct result), never a crash deep inside torch."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llm2vec_hf import LLM2Vec
from llm2vec_hf.errors import AdapterMismatchError, CheckpointError
from llm2vec_hf.tiny import build_tiny_decoder

from conftest import REPO, run_python


@pytest.fixture(scope="module")
def model(exported):
    return LLM2Vec.from_pretrained(str(exported("llama")))


@pytest.mark.parametrize(
    "inputs,error,message",
    [
        ([], ValueError, "empty"),
        ("", ValueError, "empty or whitespace"),
        (["fine", "   \n"], ValueError, "Input #1"),
        ([None], TypeError, "Input #0"),
        ([3.5], TypeError, "Input #0"),
        (None, TypeError, "Expected a text"),
        ([["only one"]], TypeError, "pair of two strings"),
        ([["a", "b", "c"]], TypeError, "pair of two strings"),
        ([["instruction", None]], TypeError, "pair of two strings"),
    ],
)
def test_bad_inputs_are_named(model, inputs, error, message):
    with pytest.raises(error, match=message):
        model.encode(inputs, show_progress_bar=False)


def test_single_text_and_tuple_pair_are_accepted(model):
    assert model.encode("one text", show_progress_bar=False).shape == (1, 32)
    assert model.encode(("an instruction", "a text"), show_progress_bar=False).shape == (1, 32)


def test_text_far_longer_than_max_length_is_truncated(model):
    text = "word " * (100 * model.max_length)
    vector = model.encode([text], show_progress_bar=False)
    assert torch.isfinite(vector).all()
    batch = model.tokenize([("", text)])
    assert batch["input_ids"].shape[1] <= model.max_length


def test_bad_batch_size(model):
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["x"], batch_size=0, show_progress_bar=False)


def test_unknown_pooling_mode_lists_the_known_ones(exported):
    with pytest.raises(ValueError, match="weighted_mean"):
        LLM2Vec.from_pretrained(str(exported("llama")), pooling_mode="max")


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
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="supports: gemma, gemma2, llama, mistral, qwen2, qwen3"):
        LLM2Vec.from_pretrained(str(tmp_path))


def save_lora(base_folder, out, target_modules=("q_proj", "v_proj")):
    from peft import LoraConfig, get_peft_model

    from llm2vec_hf.loading import load_bidirectional

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


def test_old_transformers_is_refused_with_a_clear_message():
    """On a transformers older than 5.2 the model code refuses to import instead of running causal."""
    code = f"""
import importlib.metadata, sys
real = importlib.metadata.version
importlib.metadata.version = lambda name: "4.44.2" if name == "transformers" else real(name)
sys.path.insert(0, {str(REPO / 'modeling')!r})
try:
    import modeling_llm2vec
except ImportError as error:
    print("REFUSED:", error)
"""
    proc = run_python(code, block_llm2vec_hf=True)
    assert "REFUSED:" in proc.stdout, proc.stderr[-2000:]
    assert "transformers>=5.2.0" in proc.stdout and "silently run causal" in proc.stdout


def test_single_overlong_word_is_not_cut_to_nothing(model):
    """The reference cuts a doc_max_length-busting single word to "" and then pools padding; we keep it."""
    word = "x" * (20 * model.doc_max_length)
    vector = model.encode([word, ["Find", word]], show_progress_bar=False)
    assert torch.isfinite(vector).all() and vector.abs().sum() > 0
