"""Reading a checkpoint's weights whatever its sharding, and checking that a sharded export loads everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from llm2vec_hf import LLM2Vec

from .processes import remote_code_vectors
from .samples import SAMPLE_INPUTS


def stored_weights(folder) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint in ``folder``, one file or shards with an index."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    tensors = {}
    for name in files:
        with safe_open(str(folder / name), "pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in handle.keys()})
    return tensors


def assert_sharded_loads_on_every_path(one: str, sharded: str, tmp_path: Path) -> None:
    """``sharded`` (an export in several files with an index) holds ``one``'s float32 weights and gives its
    vectors through LLM2Vec, AutoModel with remote code, and SentenceTransformer."""
    from sentence_transformers import SentenceTransformer

    files = sorted(f.name for f in Path(sharded).iterdir() if f.name.endswith(".safetensors"))
    assert len(files) > 2 and "model.safetensors" not in files
    index = json.loads((Path(sharded) / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in stored_weights(one).values())
    expected = LLM2Vec.from_pretrained(one).encode(SAMPLE_INPUTS, show_progress_bar=False).numpy()
    got = LLM2Vec.from_pretrained(sharded).encode(SAMPLE_INPUTS, show_progress_bar=False).numpy()
    assert np.abs(got - expected).max() <= 1e-6
    remote = remote_code_vectors({"sharded": sharded}, {"sharded": SAMPLE_INPUTS}, tmp_path / "remote.npz")["sharded"]
    assert np.abs(remote - expected).max() <= 1e-4
    st = SentenceTransformer(sharded, trust_remote_code=True)
    rows = [i for i, x in enumerate(SAMPLE_INPUTS) if isinstance(x, str)]
    assert np.abs(st.encode([SAMPLE_INPUTS[i] for i in rows], convert_to_numpy=True) - expected[rows]).max() <= 1e-4
