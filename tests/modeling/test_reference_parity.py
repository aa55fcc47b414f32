"""Vectors match the official llm2vec 0.2.3 (max |Δ| <= 1e-4, float32) on the recorded fixtures.

tests/fixtures/reference/ holds tiny random checkpoints and the vectors the official library produced for them
(scripts/make_reference_fixtures.py, run in a separate environment; CI does not run it). The full grid of cases
goes through ``LLM2Vec``; every pooling mode of every architecture also goes through an exported checkpoint
loaded by ``AutoModel`` (remote code, llm2vec_hf unimportable) and by ``SentenceTransformer``.
Qwen2's reference is llm2vec's code with the Llama masking rule (its own Qwen2BiModel stays causal under sdpa).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llm2vec_hf import LLM2Vec
from llm2vec_hf.checkpoint.export import export_checkpoint

from helpers.processes import remote_code_vectors
from helpers.samples import FIXTURES
from helpers.vectors import sentence_transformers_vectors

TOL = 1e-4
REFERENCE = FIXTURES / "reference"
ARCHS = ["llama", "mistral", "gemma", "qwen2"]


def load_reference(arch: str) -> dict:
    return json.loads((REFERENCE / arch / "reference.json").read_text())


def case_id(case: dict) -> str:
    skip = "skip" if case["skip_instruction"] else "noskip"
    return f"{case['pooling_mode']}-{skip}-{case['max_length']}-{case['input_set']}"


ALL_CASES = [(arch, case) for arch in ARCHS for case in load_reference(arch)["cases"]]


@pytest.fixture(scope="module")
def library_models():
    cache = {}

    def get(arch, case):
        key = (arch, case["pooling_mode"], case["skip_instruction"], case["max_length"], case["doc_max_length"])
        if key not in cache:
            cache[key] = LLM2Vec.from_pretrained(
                str(REFERENCE / arch / "model"),
                pooling_mode=case["pooling_mode"],
                skip_instruction=case["skip_instruction"],
                max_length=case["max_length"],
                doc_max_length=case["doc_max_length"],
            )
        return cache[key]

    return get


@pytest.mark.parametrize("arch,case", ALL_CASES, ids=[f"{a}-{case_id(c)}" for a, c in ALL_CASES])
@pytest.mark.slow
def test_llm2vec_matches_official(library_models, arch, case):
    model = library_models(arch, case)
    got = model.encode(case["inputs"], batch_size=case["batch_size"], show_progress_bar=False).numpy()
    expected = np.asarray(case["embeddings"], dtype=np.float32)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOL


def export_cases():
    """Per architecture and pooling mode, the case with instruction pairs at max_length 32 (skip_instruction)."""
    chosen = {}
    for arch, case in ALL_CASES:
        if case["max_length"] == 32 and case["skip_instruction"] and case["input_set"] == "pairs":
            chosen[(arch, case["pooling_mode"])] = case
    return chosen


@pytest.fixture(scope="module")
def exported_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference-exports")
    folders = {}
    for (arch, mode), case in export_cases().items():
        folders[f"{arch}/{mode}"] = export_checkpoint(
            str(REFERENCE / arch / "model"),
            str(root / f"{arch}-{mode}"),
            pooling_mode=mode,
            max_length=case["max_length"],
            doc_max_length=case["doc_max_length"],
            skip_instruction=case["skip_instruction"],
        )
    return folders


@pytest.fixture(scope="module")
def remote_reference_vectors(exported_reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("remote") / "vectors.npz"
    inputs = {key: case["inputs"] for (arch, mode), case in export_cases().items() for key in [f"{arch}/{mode}"]}
    return remote_code_vectors(exported_reference, inputs, out)


@pytest.mark.parametrize("key", sorted(f"{a}/{m}" for a, m in export_cases()))
@pytest.mark.slow
def test_exported_checkpoint_matches_official_through_every_path(
    exported_reference, remote_reference_vectors, key
):
    arch, mode = key.split("/")
    case = export_cases()[(arch, mode)]
    expected = np.asarray(case["embeddings"], dtype=np.float32)
    folder = exported_reference[key]
    library = LLM2Vec.from_pretrained(folder).encode(case["inputs"], batch_size=4, show_progress_bar=False).numpy()
    st = sentence_transformers_vectors(folder, case["inputs"])
    for name, got in [("LLM2Vec", library), ("AutoModel", remote_reference_vectors[key]), ("SentenceTransformer", st)]:
        assert np.abs(got - expected).max() <= TOL, name


# ---------------------------------------------------------------------------------------------------------------
# The deliberate differences of docs/architecture.md, one test each, and the case count the doc states
# ---------------------------------------------------------------------------------------------------------------
def test_bos_token_pools_the_first_bos_when_the_text_contains_another():
    """The reference returns one row per BOS (the batch breaks); llm2vec-hf pools the first, the one it adds."""
    import torch

    l2v = LLM2Vec.from_pretrained(str(REFERENCE / "llama" / "model"), pooling_mode="bos_token")
    texts = ["a much longer text that forces left padding on the other row", "hello <s> world"]
    got = l2v.encode(texts, batch_size=2, show_progress_bar=False)
    ids = l2v.tokenizer(texts[1])["input_ids"]
    bos_positions = [i for i, token in enumerate(ids) if token == l2v.tokenizer.bos_token_id]
    assert bos_positions[0] == 0 and len(bos_positions) == 2
    with torch.no_grad():
        hidden = l2v.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    assert (got[1] - hidden[bos_positions[0]]).abs().max() <= TOL
    assert (got[1] - hidden[bos_positions[1]]).abs().max() > 1e-2


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_mistral_sliding_window_is_ignored_as_the_reference_ignores_it(tmp_path, attn_implementation):
    """The reference's bidirectional Mistral mask has no window: every token sees every token; so does llm2vec-hf
    (`attend_to_whole_text`), with the same vectors as a model without a window."""
    import torch

    from llm2vec_hf.training.tiny_model import build_tiny_decoder

    def first_token_state(sliding_window, position):
        folder = build_tiny_decoder(tmp_path / f"w{sliding_window}", "mistral", num_layers=1, sliding_window=sliding_window)
        model = LLM2Vec.from_pretrained(str(folder), attn_implementation=attn_implementation).model
        ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
        changed = ids.clone()
        changed[0, position] = 20
        with torch.no_grad():
            return [model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[0, 0] for x in (ids, changed)]

    windowed, windowed_changed = first_token_state(2, 5)
    assert (windowed - windowed_changed).abs().max() > 1e-3  # a token 5 positions away, beyond the window, is seen
    free, _ = first_token_state(None, 5)
    assert (windowed - free).abs().max() <= 1e-6  # same seed, same weights: as if there were no window


def test_architecture_doc_states_the_recorded_case_counts():
    """docs/architecture.md gives the number of recorded reference cases; it must be what the fixtures hold."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    tokenizers = json.loads((REFERENCE / "tokenizers" / "reference.json").read_text())["fixtures"].values()
    counts = {
        "architecture": len(ALL_CASES),
        "tokenizer": sum(len(f["cases"]) for f in tokenizers),
        "migration": len(json.loads((REFERENCE / "migration" / "reference.json").read_text())["cases"]),
        "template": len(json.loads((REFERENCE / "migration" / "templates.json").read_text())["cases"]),
    }
    stated = {kind: int(n) for n, kind in re.findall(r"(\d+)\s+(architecture|tokenizer|migration|template)\s+cases", doc)}
    assert stated == counts
    total = re.search(r"check\s+(\d+)\s+cases\s+recorded", doc)
    assert total and int(total.group(1)) == sum(counts.values())
