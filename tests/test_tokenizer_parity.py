"""Tokenizers unlike the family defaults give the official llm2vec 0.2.3 vectors, through every loading path.

tests/fixtures/reference/tokenizers/ holds tiny checkpoints whose tokenizers none of the other fixtures resemble
(own BOS/EOS strings, a distinct pad or none, a Qwen2 model without ``<|endoftext|>``, SentencePiece-style and
byte-level vocabularies, 4.44 tokenizer classes that add BOS/EOS themselves, a Gemma whose EOS is ``</s>``, a
Llama with Llama-3's EOS under three names), with the vectors and token ids the official library gave for them
(scripts/make_reference_fixtures.py). Every case must match at 1e-4 via ``LLM2Vec`` on the folder, and after
``export`` via ``LLM2Vec``, ``AutoModel(trust_remote_code=True).encode`` (remote code only) and
``SentenceTransformer(trust_remote_code=True)``; the exported tokenizer must tokenize as the base did.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from llm2vec_hf import LLM2Vec, cli
from llm2vec_hf.errors import TokenizerError
from llm2vec_hf.export import export_checkpoint
from llm2vec_hf.loading import load_tokenizer
from llm2vec_hf.modeling.modeling_llm2vec import LLAMA3_INSTRUCT_NAME, LLAMA3_INSTRUCT_TEMPLATE

from conftest import FIXTURES, remote_code_vectors
from test_loading_paths import sentence_transformers_vectors

TOL = 1e-4
ROOT = FIXTURES / "reference" / "tokenizers"
REFERENCE = json.loads((ROOT / "reference.json").read_text())
FIXTURE_NAMES = sorted(REFERENCE["fixtures"])
CASES = [(name, case) for name in FIXTURE_NAMES for case in REFERENCE["fixtures"][name]["cases"]]


def case_id(name: str, case: dict) -> str:
    named = f"@{case['name_or_path'].split('/')[-1]}" if case["name_or_path"] else ""
    return f"{name}{named}-{case['pooling_mode']}-{'skip' if case['skip_instruction'] else 'noskip'}"


def overrides(case: dict) -> dict:
    """What llm2vec-hf is told beyond the folder: the settings, and the Llama-3-Instruct wrapper that the
    reference applies by hub name (llm2vec-hf keeps templates as an explicit checkpoint setting)."""
    settings = {k: case[k] for k in ("pooling_mode", "skip_instruction", "max_length", "doc_max_length")}
    if case["name_or_path"] == LLAMA3_INSTRUCT_NAME:
        settings["text_template"] = LLAMA3_INSTRUCT_TEMPLATE
    return settings


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The fixture folder, or a copy whose config.json carries the case's `_name_or_path` (as the reference ran)."""
    root = tmp_path_factory.mktemp("named")
    cache: dict[tuple[str, str | None], Path] = {}

    def get(name: str, name_or_path: str | None) -> Path:
        if (name, name_or_path) not in cache:
            folder = ROOT / name / "model"
            if name_or_path is not None:
                copy = root / name / name_or_path.replace("/", "--")
                shutil.copytree(folder, copy)
                config = json.loads((copy / "config.json").read_text())
                config["_name_or_path"] = name_or_path
                (copy / "config.json").write_text(json.dumps(config))
                folder = copy
            cache[(name, name_or_path)] = folder
        return cache[(name, name_or_path)]

    return get


@pytest.fixture(scope="module")
def exported(folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    result = {}
    for name, case in CASES:
        key = case_id(name, case)
        result[key] = export_checkpoint(str(folders(name, case["name_or_path"])), str(root / key), **overrides(case))
    return result


@pytest.fixture(scope="module")
def automodel_vectors(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("remote") / "vectors.npz"
    return remote_code_vectors(exported, {case_id(n, c): c["inputs"] for n, c in CASES}, out)


@pytest.mark.parametrize("name,case", CASES, ids=[case_id(n, c) for n, c in CASES])
def test_base_folder_matches_official(folders, name, case):
    model = LLM2Vec.from_pretrained(str(folders(name, case["name_or_path"])), **overrides(case))
    got = model.encode(case["inputs"], batch_size=case["batch_size"], show_progress_bar=False).numpy()
    assert np.abs(got - np.asarray(case["embeddings"], dtype=np.float32)).max() <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("name,case", CASES, ids=[case_id(n, c) for n, c in CASES])
def test_exported_checkpoint_matches_official_through_every_path(exported, automodel_vectors, name, case):
    key = case_id(name, case)
    folder = exported[key]
    expected = np.asarray(case["embeddings"], dtype=np.float32)
    library = LLM2Vec.from_pretrained(folder).encode(case["inputs"], batch_size=4, show_progress_bar=False).numpy()
    st = sentence_transformers_vectors(folder, [pair if pair[0] else pair[1] for pair in case["inputs"]])
    for path, got in [("LLM2Vec", library), ("AutoModel", automodel_vectors[key]), ("SentenceTransformer", st)]:
        assert np.abs(got - expected).max() <= TOL, path


def test_eos_text_is_resolved_at_export_and_stored(exported):
    """The checkpoint keeps the reference's choice, so loading it under another name cannot change it."""
    stored = {}
    for name, case in CASES:
        if case["pooling_mode"] == "eos_token":
            config = json.loads((Path(exported[case_id(name, case)]) / "config.json").read_text())
            stored[(name, case["name_or_path"])] = config["llm2vec"]["eos_text"]
    assert stored == {
        ("gemma-eos-s", None): "<eos>",  # not the tokenizer's EOS "</s>"
        ("llama-sentencepiece", None): " </s>",
        ("llama3-style", None): " </s>",  # a LlamaConfig: the reference ignores the tokenizer's EOS
        ("llama3-style", "meta-llama/Meta-Llama-3-8B"): "<|end_of_text|>",
        ("llama3-style", LLAMA3_INSTRUCT_NAME): "",  # nothing after the Llama-3-Instruct template
        ("mistral-metaspace-add-eos", None): " </s>",
        ("qwen2-own-bpe", None): "<|endoftext|>",  # plain text for this vocabulary
    }


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_tokenizer_round_trip_keeps_the_reference_tokenization(folders, exported, name):
    """Base folder, exported folder and transformers' own AutoTokenizer on the export (as the AutoModel path is
    used, then replaced by the remote code) all give the reference's ids and special tokens (pad = EOS where
    none is declared, as the official scripts set it); the export declares what the base declared."""
    facts = REFERENCE["fixtures"][name]["tokenizer"]
    key = next(case_id(n, c) for n, c in CASES if n == name)
    folder = Path(exported[key])
    from transformers import AutoModel

    from llm2vec_hf.modeling.modeling_llm2vec import reference_tokenizer_for

    model = AutoModel.from_pretrained(str(folder), trust_remote_code=True)
    candidates = {
        "base": load_tokenizer(str(folders(name, None))),
        "exported": load_tokenizer(str(folder)),
        "AutoTokenizer(exported)": reference_tokenizer_for(AutoTokenizer.from_pretrained(str(folder)), model),
    }
    expected = dict(facts["special_tokens"])
    expected["pad_token"] = expected["pad_token"] or expected["eos_token"]
    for label, tokenizer in candidates.items():
        got = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        assert got == expected, label
        assert [tokenizer(t)["input_ids"] for t in REFERENCE["probes"]] == facts["probe_ids"], label
        no_special = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in REFERENCE["probes"]]
        assert no_special == facts["probe_ids_no_special"], label

    def read(model_folder: Path, file: str) -> dict:
        return json.loads((model_folder / file).read_text())

    base_config, config = read(ROOT / name / "model", "tokenizer_config.json"), read(folder, "tokenizer_config.json")
    for key in ("tokenizer_class", "add_bos_token", "add_eos_token", "bos_token", "eos_token", "unk_token", "pad_token"):
        assert config.get(key) == base_config.get(key), key
    added = [(t["id"], t["content"]) for t in read(folder, "tokenizer.json")["added_tokens"]]
    assert added == [(t["id"], t["content"]) for t in read(ROOT / name / "model", "tokenizer.json")["added_tokens"]]


def test_qwen2_without_endoftext_pads_inside_the_embedding():
    """transformers 5 resolves this folder as Qwen2Tokenizer and adds a pad `<|endoftext|>` (id = vocab size)."""
    folder = ROOT / "qwen2-own-bpe" / "model"
    vocab_rows = json.loads((folder / "config.json").read_text())["vocab_size"]
    l2v = LLM2Vec.from_pretrained(str(folder))
    assert l2v.tokenizer.pad_token_id == l2v.tokenizer.eos_token_id < vocab_rows
    batch = l2v.tokenize([("", "x"), ("", "a much longer text than the first")])
    assert int(batch["input_ids"].max()) < vocab_rows and int(batch["attention_mask"].sum(1).min()) < batch["input_ids"].shape[1]


def _with_extra_special_token(tmp_path: Path) -> Path:
    folder = tmp_path / "bad"
    shutil.copytree(ROOT / "qwen2-own-bpe" / "model", folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["additional_special_tokens"] = ["<|beyond|>"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_special_token_outside_the_embedding_is_a_clear_error(tmp_path, capsys):
    folder = _with_extra_special_token(tmp_path)
    with pytest.raises(TokenizerError, match=r"'<\|beyond\|>' has id 320.*320 rows"):
        LLM2Vec.from_pretrained(str(folder))
    code = cli.main(["export", str(folder), "--output", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Loading weights" not in line]
    assert code == 2 and len(err) == 1 and "error:" in err[0] and "'<|beyond|>'" in err[0], err
    assert not (tmp_path / "out").exists()
