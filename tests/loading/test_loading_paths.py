"""The three loading paths give the same vectors (max |Δ| <= 1e-4), for every family and pooling mode.

- ``llm2vec_hf.LLM2Vec.from_pretrained``;
- ``AutoModel.from_pretrained(trust_remote_code=True)`` in a process where llm2vec_hf cannot be imported;
- ``SentenceTransformer(trust_remote_code=True)`` with instructions given as prompts.
Loading by repo id is checked from a fresh HF cache in the Hub's layout with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm2vec_hf import POOLING_MODES, LLM2Vec

from helpers.hub_cache import hub_cache_with
from helpers.processes import remote_code_vectors, run_python
from helpers.samples import SAMPLE_INPUTS
from helpers.vectors import sentence_transformers_vectors

TOL = 1e-4
#: Every pooling mode on the six families whose tokenizers the reference fixtures cover; every declared family's
#: export paths run in the conformance suite (tests/modeling/test_conformance.py).
FAMILY_NAMES = ["gemma", "gemma2", "llama", "mistral", "qwen2", "qwen3"]
# qwen2/qwen3 tokenizers add no BOS, as the real ones: bos_token pooling is undefined there.
CASES = [(f, p) for f in FAMILY_NAMES for p in POOLING_MODES if not (p == "bos_token" and f.startswith("qwen"))]


@pytest.fixture(scope="module")
def automodel_vectors(exported, tmp_path_factory):
    """Vectors of every case through AutoModel remote code, computed in one subprocess without llm2vec_hf."""
    folders = {f"{f}/{p}": str(exported(f, p)) for f, p in CASES}
    out = tmp_path_factory.mktemp("automodel") / "vectors.npz"
    return remote_code_vectors(folders, {key: SAMPLE_INPUTS for key in folders}, out)


@pytest.mark.parametrize("family,pooling_mode", CASES)
@pytest.mark.slow
def test_three_paths_agree(exported, automodel_vectors, family, pooling_mode):
    folder = exported(family, pooling_mode)
    library = LLM2Vec.from_pretrained(str(folder)).encode(SAMPLE_INPUTS, batch_size=4, show_progress_bar=False)
    assert library.dtype == torch.float32 and library.shape == (len(SAMPLE_INPUTS), 32)
    remote = automodel_vectors[f"{family}/{pooling_mode}"]
    st = sentence_transformers_vectors(folder, SAMPLE_INPUTS)
    assert np.abs(library.numpy() - remote).max() <= TOL
    assert np.abs(library.numpy() - st).max() <= TOL


def test_named_prompt_equals_instruction_pair(exported):
    from sentence_transformers import SentenceTransformer

    folder = exported("llama")
    model = SentenceTransformer(str(folder), trust_remote_code=True)
    prompt = model.prompts["query"]
    by_name = model.encode(["what is attention?"], prompt_name="query", convert_to_numpy=True)
    library = LLM2Vec.from_pretrained(str(folder)).encode([[prompt, "what is attention?"]], show_progress_bar=False)
    assert np.abs(by_name - library.numpy()).max() <= TOL


def test_instruction_changes_vector_but_is_not_pooled(exported):
    """The instruction is read (bidirectional attention) but its tokens are not averaged in."""
    l2v = LLM2Vec.from_pretrained(str(exported("llama")))
    plain, instructed = l2v.encode(["what is attention?", ["Find passages", "what is attention?"]], show_progress_bar=False)
    assert (plain - instructed).abs().max() > 1e-4
    batch = l2v.tokenize([("Find passages", "what is attention?"), ("", "what is attention?")])
    n_text = len(l2v.tokenizer("what is attention?", add_special_tokens=False)["input_ids"])
    assert batch["pool_mask"].sum(1).tolist() == [n_text, n_text]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.slow
def test_load_by_repo_id_from_offline_hub_cache(exported, tmp_path, family):
    folder = exported(family)
    cache = hub_cache_with(f"llm2vec-test/{family}-tiny", folder, tmp_path / "hub")
    expected = LLM2Vec.from_pretrained(str(folder)).encode(SAMPLE_INPUTS, show_progress_bar=False).numpy()
    np.save(tmp_path / "expected.npy", expected)
    code = f"""
import json, numpy as np
repo = "llm2vec-test/{family}-tiny"
inputs = json.loads({json.dumps(json.dumps(SAMPLE_INPUTS))})
expected = np.load({str(tmp_path / 'expected.npy')!r})
from transformers import AutoModel, AutoTokenizer
remote = AutoModel.from_pretrained(repo, trust_remote_code=True).encode(inputs, AutoTokenizer.from_pretrained(repo)).numpy()
from llm2vec_hf import LLM2Vec
library = LLM2Vec.from_pretrained(repo).encode(inputs, show_progress_bar=False).numpy()
from sentence_transformers import SentenceTransformer
st = SentenceTransformer(repo, trust_remote_code=True).encode([inputs[0]], convert_to_numpy=True)
for name, got in [("AutoModel", remote), ("LLM2Vec", library), ("SentenceTransformer", st)]:
    delta = float(np.abs(got - expected[: len(got)]).max())
    assert delta <= {TOL}, (name, delta)
print("ok")
"""
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    proc = run_python(code, env=env)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_sentence_transformers_without_trust_remote_code_is_refused(exported):
    """The remote layout needs trust_remote_code: without it sentence-transformers refuses the module (its own
    message, not asserted here), rather than loading a model that would not give LLM2Vec's vectors."""
    from sentence_transformers import SentenceTransformer

    with pytest.raises(Exception) as refused:
        SentenceTransformer(str(exported("llama")))
    assert not isinstance(refused.value, (AssertionError, KeyboardInterrupt))
