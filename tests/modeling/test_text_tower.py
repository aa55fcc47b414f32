"""A multimodal checkpoint with a declared text tower (Gemma-3-4B-it's ``gemma3`` type): only the text tower is
loaded, trained and exported, and it gives the vectors of the same weights saved as a text-only ``gemma3_text``
checkpoint. The test builds both: a tiny ``Gemma3ForConditionalGeneration`` (vision tower, projector and text
weights in one safetensors file) and the text-only twin."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.processes import run_python
from llm2vec_hf import LLM2Vec

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["The quick brown fox jumps over the lazy dog near the river bank.", "a", "Encoders read every token."]
TEXT_CONFIG = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 4, "max_position_embeddings": 1024,
               "initializer_range": 0.2}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """``multimodal``: the gemma3 checkpoint (hub layout: ``language_model.model.…``, ``vision_tower.…``);
    ``text``: its text tower's weights as a gemma3_text ``Gemma3ForCausalLM`` checkpoint."""
    from transformers import Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration

    from llm2vec_hf.training.tiny_model import train_tokenizer

    root = tmp_path_factory.mktemp("text-tower")
    tokenizer = train_tokenizer("gemma3_text")
    ids = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad")}
    config = Gemma3Config(
        text_config={"vocab_size": len(tokenizer), **TEXT_CONFIG, **ids},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 14},
        mm_tokens_per_image=4, **ids)
    torch.manual_seed(0)
    multimodal = Gemma3ForConditionalGeneration(config)
    multimodal.save_pretrained(root / "multimodal", safe_serialization=True)
    tokenizer.save_pretrained(root / "multimodal")
    text = Gemma3ForCausalLM(config.text_config)
    text.model.load_state_dict(multimodal.model.language_model.state_dict())
    text.lm_head.weight = text.model.embed_tokens.weight
    text.save_pretrained(root / "text", safe_serialization=True)
    tokenizer.save_pretrained(root / "text")
    return {"multimodal": root / "multimodal", "text": root / "text"}


def test_the_fixture_is_a_multimodal_checkpoint(checkpoints):
    from safetensors import safe_open

    assert json.loads((checkpoints["multimodal"] / "config.json").read_text())["model_type"] == "gemma3"
    with safe_open(checkpoints["multimodal"] / "model.safetensors", "pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("vision_tower.") for k in keys) and any(k.startswith("language_model.") for k in keys)


def test_loads_the_text_tower_with_the_text_only_vectors(checkpoints):
    tower = LLM2Vec.from_pretrained(str(checkpoints["multimodal"]))
    assert tower.model.config.model_type == "gemma3_text"
    assert not any("vision" in name for name, _ in tower.model.named_parameters())
    text = LLM2Vec.from_pretrained(str(checkpoints["text"]))
    got, expected = (m.encode(TEXTS, show_progress_bar=False) for m in (tower, text))
    assert (got - expected).abs().max().item() <= 1e-5


def test_an_unknown_tensor_beside_the_tower_is_still_refused(checkpoints, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from llm2vec_hf.errors import CheckpointError

    folder = tmp_path / "extra"
    shutil.copytree(checkpoints["multimodal"], folder)
    weights = load_file(folder / "model.safetensors")
    weights["audio_tower.proj.weight"] = torch.zeros(2, 2)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="audio_tower"):
        LLM2Vec.from_pretrained(str(folder))


@pytest.mark.slow
def test_export_streams_the_text_tower_and_every_path_agrees(checkpoints, tmp_path, monkeypatch):
    """Export reads no vision tensor, writes a gemma3_text checkpoint, and AutoModel (remote code, llm2vec_hf
    unimportable), SentenceTransformer and LLM2Vec give the text-only checkpoint's vectors."""
    from safetensors import safe_open
    from sentence_transformers import SentenceTransformer

    from llm2vec_hf.checkpoint import merged_weights
    from llm2vec_hf.checkpoint.export import export_checkpoint

    read = []

    class RecordingSafeOpen:
        """safe_open, recording the name of every tensor read."""

        def __init__(self, *args, **kwargs):
            self.handle = safe_open(*args, **kwargs)

        def __enter__(self):
            self.inner = self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def get_tensor(self, key):
            read.append(key)
            return self.inner.get_tensor(key)

    monkeypatch.setattr(merged_weights, "safe_open", RecordingSafeOpen)
    folder = export_checkpoint(str(checkpoints["multimodal"]), str(tmp_path / "export"), pooling_mode="mean")
    monkeypatch.undo()
    assert read and all(key.startswith("language_model.") for key in read), sorted(set(read))[:5]
    config = json.loads((Path(folder) / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "vision_config" not in config
    with safe_open(Path(folder) / "model.safetensors", "pt") as handle:
        assert not any("vision" in key for key in handle.keys())

    expected = LLM2Vec.from_pretrained(str(checkpoints["text"]), pooling_mode="mean").encode(
        TEXTS, show_progress_bar=False).numpy()
    exported = LLM2Vec.from_pretrained(folder).encode(TEXTS, show_progress_bar=False).numpy()
    assert np.abs(exported - expected).max() <= 1e-5
    st = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
    assert np.abs(st.encode(TEXTS) - expected).max() <= 1e-5
    out = tmp_path / "remote.npy"
    proc = run_python(f"""
import numpy as np
from transformers import AutoModel, AutoTokenizer
model = AutoModel.from_pretrained({folder!r}, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
np.save({str(out)!r}, model.encode({TEXTS!r}, AutoTokenizer.from_pretrained({folder!r})).numpy())
""", block_llm2vec_hf=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.abs(np.load(out) - expected).max() <= 1e-5


def test_one_mntp_step_trains_the_text_tower(checkpoints, tmp_path):
    from safetensors.torch import load_file

    from test_conformance import logged_losses, one_step
    from llm2vec_hf.training.tiny_model import english_corpus

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(english_corpus()[:64]) + "\n")
    run = one_step("mntp", checkpoints["multimodal"], corpus, tmp_path / "mntp")
    losses = logged_losses(run)
    assert losses and all(math.isfinite(loss) for loss in losses)
    b_matrices = {k: v for k, v in load_file(tmp_path / "mntp" / "adapter_model.safetensors").items() if "lora_B" in k}
    assert b_matrices and all(v.abs().max().item() > 0 for v in b_matrices.values())
    assert not any("vision" in key for key in b_matrices)
