"""``export`` writes the checkpoint of docs/architecture.md ("Checkpoint layout"), atomically, and safetensors only."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from llm2vec_hf import LLM2Vec
from llm2vec_hf.errors import LLM2VecError
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.modeling.sentence_transformers_llm2vec import MODELING_FILES

EXPECTED_FILES = {
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", *MODELING_FILES, "modules.json",
    "sentence_bert_config.json", "config_sentence_transformers.json", "llm2vec_config.json", "README.md",
}


def test_checkpoint_layout(exported):
    folder = exported("mistral", "weighted_mean")
    files = set(os.listdir(folder))
    assert EXPECTED_FILES <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "mistral" and config["architectures"] == ["MistralModel"]
    assert config["is_causal"] is False and config["use_bidirectional_attention"] is True
    assert config["auto_map"] == {
        "AutoConfig": "modeling_llm2vec.BidirectionalMistralConfig",
        "AutoModel": "modeling_llm2vec.BidirectionalMistralModel",
    }
    assert config["llm2vec"]["pooling_mode"] == "weighted_mean"
    official = json.loads((folder / "llm2vec_config.json").read_text())
    assert official == {"pooling_mode": "weighted_mean", "max_length": 48, "doc_max_length": 40, "skip_instruction": True}
    st = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert st["prompts"]["query"].startswith("Given a web search query")
    assert st["requirements"]["transformers"]["specifier"] == ">=5.2.0"
    modules = json.loads((folder / "modules.json").read_text())
    assert modules[0]["type"] == "sentence_transformers_llm2vec.LLM2VecTransformer"


def test_model_code_is_the_library_copy(exported):
    """Every file of modeling/ ships, verbatim, and every relative import of a shipped file is shipped too (the
    remote-code loader follows them; a missing one fails only on a machine without llm2vec_hf)."""
    from importlib import resources

    folder = exported("llama")
    library = resources.files("llm2vec_hf.modeling")
    assert set(MODELING_FILES) == {p.name for p in Path(str(library)).glob("*.py")} - {"__init__.py"}
    for name in MODELING_FILES:
        assert (folder / name).read_text() == library.joinpath(name).read_text()
        for node in ast.walk(ast.parse((folder / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert f"{node.module}.py" in MODELING_FILES, (name, node.module)


def test_interrupted_export_leaves_nothing_that_looks_complete(tiny_bases, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(str(tiny_bases["llama"]), str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []


def test_existing_output_needs_overwrite(tiny_bases, tmp_path):
    out = tmp_path / "out"
    export_checkpoint(str(tiny_bases["llama"]), str(out), pooling_mode="mean")
    with pytest.raises(LLM2VecError, match="--overwrite"):
        export_checkpoint(str(tiny_bases["llama"]), str(out))
    export_checkpoint(str(tiny_bases["llama"]), str(out), pooling_mode="last_token", overwrite=True)
    assert json.loads((out / "llm2vec_config.json").read_text())["pooling_mode"] == "last_token"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_bfloat16_export(tiny_bases, tmp_path):
    out = export_checkpoint(str(tiny_bases["llama"]), str(tmp_path / "bf16"), dtype="bfloat16")
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}


def test_adapter_is_merged(tiny_bases, tmp_path):
    from peft import LoraConfig, get_peft_model

    from llm2vec_hf.loading.models import load_bidirectional

    model, _, _ = load_bidirectional(str(tiny_bases["llama"]))
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(tmp_path / "adapter")
    out = export_checkpoint(str(tiny_bases["llama"]), str(tmp_path / "merged"), adapters=[str(tmp_path / "adapter")])
    texts = ["merging adapters", ["Find", "a passage"]]
    merged = LLM2Vec.from_pretrained(out).encode(texts, show_progress_bar=False)
    attached = LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(tmp_path / "adapter"))
    plain = LLM2Vec.from_pretrained(str(tiny_bases["llama"]))
    assert np.abs(merged.numpy() - attached.encode(texts, show_progress_bar=False).numpy()).max() <= 1e-4
    assert np.abs(merged.numpy() - plain.encode(texts, show_progress_bar=False).numpy()).max() > 1e-3


def test_save_writes_the_same_checkpoint(exported, tmp_path):
    l2v = LLM2Vec.from_pretrained(str(exported("gemma")))
    path = l2v.save(str(tmp_path / "saved"))
    again = LLM2Vec.from_pretrained(path)
    texts = ["a saved model", ["Query", "gives the same vectors"]]
    assert (l2v.encode(texts, show_progress_bar=False) - again.encode(texts, show_progress_bar=False)).abs().max() <= 1e-6
