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
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.loading.models import load_tokenizer
from llm2vec_hf.modeling.encoding_settings import LLAMA3_INSTRUCT_NAME, LLAMA3_INSTRUCT_TEMPLATE

from helpers.processes import run_python
from helpers.samples import FIXTURES

TOL = 1e-4
ROOT = FIXTURES / "reference" / "tokenizers"
REFERENCE = json.loads((ROOT / "reference.json").read_text())
FIXTURE_NAMES = sorted(REFERENCE["fixtures"])
CASES = [(name, case) for name in FIXTURE_NAMES for case in REFERENCE["fixtures"][name]["cases"]]


def case_id(name: str, case: dict) -> str:
    named = f"@{case['name_or_path'].split('/')[-1]}" if case["name_or_path"] else ""
    return f"{name}{named}-{case['pooling_mode']}-{'skip' if case['skip_instruction'] else 'noskip'}"


def overrides(case: dict) -> dict:
    """What llm2vec-hf is told beyond the folder: the settings only (the Llama-3-Instruct wrapper and the EOS text
    follow from the folder's name, as in the reference)."""
    return {k: case[k] for k in ("pooling_mode", "skip_instruction", "max_length", "doc_max_length")}


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


def export_key(name: str, case: dict) -> str:
    return f"{name}--{(case['name_or_path'] or 'own-name').replace('/', '--')}"


def encoding(case: dict) -> dict:
    return {k: case[k] for k in ("pooling_mode", "skip_instruction", "max_length", "doc_max_length")}


@pytest.fixture(scope="module")
def exported(folders, tmp_path_factory):
    """One export per folder and name, with eos_token pooling (so the stored eos_text is the one exercised);
    the cases then pick their pooling settings at encode time."""
    root = tmp_path_factory.mktemp("exported")
    result = {}
    for name, case in CASES:
        key = export_key(name, case)
        if key not in result:
            settings = {**overrides(case), "pooling_mode": "eos_token"}
            result[key] = export_checkpoint(str(folders(name, case["name_or_path"])), str(root / key), **settings)
    return result


@pytest.fixture(scope="module")
def automodel_vectors(exported, tmp_path_factory):
    """Every case through ``AutoModel.from_pretrained(trust_remote_code=True).encode`` with the checkpoint's
    tokenizer as transformers' AutoTokenizer loads it, in one process where llm2vec_hf cannot be imported."""
    work = tmp_path_factory.mktemp("remote")
    request = [{"key": case_id(n, c), "folder": exported[export_key(n, c)], "inputs": c["inputs"], "settings": encoding(c)}
               for n, c in CASES]
    (work / "request.json").write_text(json.dumps(request))
    code = f"""
import json, numpy as np
from transformers import AutoModel, AutoTokenizer
models, result = {{}}, {{}}
for item in json.load(open({str(work / 'request.json')!r})):
    if item["folder"] not in models:
        model = AutoModel.from_pretrained(item["folder"], trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        models[item["folder"]] = (model, AutoTokenizer.from_pretrained(item["folder"]))
    model, tokenizer = models[item["folder"]]
    result[item["key"]] = model.encode(item["inputs"], tokenizer, batch_size=4, **item["settings"]).numpy()
np.savez({str(work / 'vectors.npz')!r}, **result)
"""
    proc = run_python(code, block_llm2vec_hf=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(work / "vectors.npz"))


@pytest.fixture(scope="module")
def sentence_transformers_models(exported):
    from sentence_transformers import SentenceTransformer

    return {key: SentenceTransformer(folder, trust_remote_code=True) for key, folder in exported.items()}


def sentence_transformers_encode(model, case: dict) -> np.ndarray:
    """The case's settings go where the module reads them (the checkpoint's stored ``llm2vec`` settings)."""
    model[0].auto_model.config.llm2vec.update(encoding(case))
    model.max_seq_length = case["max_length"]
    return np.stack([model.encode([text], prompt=instruction + " " if instruction else None, convert_to_numpy=True)[0]
                     for instruction, text in case["inputs"]])


@pytest.mark.parametrize("name,case", CASES, ids=[case_id(n, c) for n, c in CASES])
@pytest.mark.slow
def test_base_folder_matches_official(folders, name, case):
    model = LLM2Vec.from_pretrained(str(folders(name, case["name_or_path"])), **overrides(case))
    got = model.encode(case["inputs"], batch_size=case["batch_size"], show_progress_bar=False).numpy()
    assert np.abs(got - np.asarray(case["embeddings"], dtype=np.float32)).max() <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("name,case", CASES, ids=[case_id(n, c) for n, c in CASES])
def test_exported_checkpoint_matches_official_through_every_path(
    exported, automodel_vectors, sentence_transformers_models, name, case
):
    key = export_key(name, case)
    expected = np.asarray(case["embeddings"], dtype=np.float32)
    library = LLM2Vec.from_pretrained(exported[key], **encoding(case))
    library = library.encode(case["inputs"], batch_size=4, show_progress_bar=False).numpy()
    st = sentence_transformers_encode(sentence_transformers_models[key], case)
    remote = automodel_vectors[case_id(name, case)]
    for path, got in [("LLM2Vec", library), ("AutoModel", remote), ("SentenceTransformer", st)]:
        assert np.abs(got - expected).max() <= TOL, path


def test_eos_text_is_resolved_at_export_and_stored(exported):
    """The checkpoint keeps the reference's choice, so loading it under another name cannot change it."""
    stored = {}
    for name, case in CASES:
        config = json.loads((Path(exported[export_key(name, case)]) / "config.json").read_text())
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
    templates = {key: json.loads((Path(folder) / "config.json").read_text())["llm2vec"]["text_template"]
                 for key, folder in exported.items()}
    assert templates.pop("llama3-style--meta-llama--Meta-Llama-3-8B-Instruct") == LLAMA3_INSTRUCT_TEMPLATE
    assert set(templates.values()) == {""}  # stored as "none", so no later name can add one


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_tokenizer_round_trip_keeps_the_reference_tokenization(folders, exported, name):
    """Base folder, exported folder and transformers' own AutoTokenizer on the export (as the AutoModel path is
    used, then replaced by the remote code) all give the reference's ids and special tokens (pad = EOS where
    none is declared, as the official scripts set it); the export declares what the base declared."""
    facts = REFERENCE["fixtures"][name]["tokenizer"]
    folder = Path(exported[f"{name}--own-name"])
    from transformers import AutoModel

    from llm2vec_hf.modeling.tokenization_llm2vec import reference_tokenizer_for

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


def test_explicit_eos_text_is_a_stored_setting(tmp_path, capsys):
    """``--eos-text`` overrides the reference's choice and is stored: the generic-named Llama-3-style folder
    exported with "<|end_of_text|>" gives the vectors the reference gave under the name Meta-Llama-3-8B."""
    case = next(c for n, c in CASES if n == "llama3-style" and c["name_or_path"] == "meta-llama/Meta-Llama-3-8B"
                and c["pooling_mode"] == "eos_token")
    out = tmp_path / "out"
    code = cli.main(["export", str(ROOT / "llama3-style" / "model"), "--output", str(out), "--pooling", "eos_token",
                     "--eos-text", "<|end_of_text|>", "--max-length", "48", "--doc-max-length", "40"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["llm2vec"]["eos_text"] == "<|end_of_text|>"
    got = LLM2Vec.from_pretrained(str(out)).encode(case["inputs"], batch_size=4, show_progress_bar=False).numpy()
    assert np.abs(got - np.asarray(case["embeddings"], dtype=np.float32)).max() <= TOL


def test_families_without_a_reference_get_their_predecessors_eos_text():
    from llm2vec_hf.modeling.encoding_settings import reference_eos_text

    assert reference_eos_text("qwen3") == reference_eos_text("qwen2") == "<|endoftext|>"
    assert reference_eos_text("gemma2") == reference_eos_text("gemma") == "<eos>"
    with pytest.raises(ValueError, match="eos_text"):
        reference_eos_text("phi3")
    # families the reference never had append their own tokenizer's EOS
    assert reference_eos_text("phi3", eos_token="<|endoftext|>") == "<|endoftext|>"
    assert reference_eos_text("gemma2", eos_token="<end_of_turn>") == "<eos>"
