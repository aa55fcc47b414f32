"""The sentence-transformers files `export` writes: stock modules where they are exact (loading needs no remote
code), the LLM2Vec module elsewhere, ``--st-modules stock`` with its measured deviation, and 1_Pooling/config.json
in the form TEI parses."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from llm2vec_hf import LLM2Vec, cli
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.checkpoint.st_layout import STOCK_SAMPLE
from llm2vec_hf.modeling.tokenization_llm2vec import load_reference_tokenizer

from helpers.hub_cache import hub_cache_with
from helpers.processes import run_python
from helpers.samples import FIXTURES

REFERENCE = FIXTURES / "reference"
TOL = 1e-4
LLM2VEC_MODULE = "sentence_transformers_llm2vec.LLM2VecTransformer"
STOCK_MODULES = ["sentence_transformers.base.modules.transformer.Transformer",
                 "sentence_transformers.sentence_transformer.modules.pooling.Pooling"]


def _module_types(folder) -> list[str]:
    return [entry["type"] for entry in json.loads((folder / "modules.json").read_text())]


@pytest.mark.parametrize("arch", ["llama", "gemma"])  # no pad token / a pad token of its own
@pytest.mark.slow
def test_last_token_checkpoint_loads_by_repo_id_without_remote_code_with_the_official_vectors(arch, tmp_path):
    reference = json.loads((REFERENCE / arch / "reference.json").read_text())
    case = next(c for c in reference["cases"] if c["pooling_mode"] == "last_token" and c["skip_instruction"]
                and c["max_length"] == 512 and c["input_set"] == "plain")
    model_folder = REFERENCE / arch / "model"
    # the reference cuts texts word-wise at doc_max_length; texts within it are what stock modules see too
    tokenizer = load_reference_tokenizer(str(model_folder), arch)
    rows = [i for i, text in enumerate(case["inputs"])
            if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= case["doc_max_length"]]
    assert len(rows) == len(case["inputs"]) - 1  # all but the one long text
    folder = export_checkpoint(str(model_folder), str(tmp_path / "export"), pooling_mode="last_token",
                               max_length=512, doc_max_length=512)
    assert _module_types(tmp_path / "export") == STOCK_MODULES
    cache = hub_cache_with(f"llm2vec-test/{arch}-last-token", tmp_path / "export", tmp_path / "hub")
    np.save(tmp_path / "expected.npy", np.array([case["embeddings"][i] for i in rows], dtype=np.float32))
    code = f"""
import numpy as np
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("llm2vec-test/{arch}-last-token")  # no trust_remote_code
assert [type(m).__module__.split(".")[0] for m in model] == ["sentence_transformers", "sentence_transformers"]
got = model.encode({[case["inputs"][i] for i in rows]!r}, convert_to_numpy=True)
delta = float(np.abs(got - np.load({str(tmp_path / 'expected.npy')!r})).max())
assert delta <= {TOL}, delta
print("ok", delta)
"""
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    proc = run_python(code, env=env, block_llm2vec_hf=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
    # the other paths still load it and agree
    library = LLM2Vec.from_pretrained(folder).encode([case["inputs"][i] for i in rows], show_progress_bar=False)
    assert np.abs(library.numpy() - np.array([case["embeddings"][i] for i in rows])).max() <= TOL


@pytest.mark.parametrize("encoding,why", [
    ({"pooling_mode": "mean"}, "stock pooling also pools BOS and the instruction"),
    ({"pooling_mode": "last_token", "doc_max_length": 40}, "cut word-wise to doc_max_length=40"),
    ({"pooling_mode": "eos_token"}, "appends ' </s>'"),
    ({"pooling_mode": "last_token", "text_template": "[INST] {text} [/INST]"}, "text template"),
])
def test_auto_keeps_the_llm2vec_module_where_stock_modules_are_not_exact(tiny_bases, tmp_path, caplog, encoding,
                                                                          why):
    caplog.set_level(logging.INFO, logger="llm2vec_hf.checkpoint")
    out = tmp_path / "out"
    export_checkpoint(str(tiny_bases["llama"]), str(out), max_length=48, **encoding)
    assert _module_types(out) == [LLM2VEC_MODULE]
    assert why in caplog.text


def test_st_modules_stock_writes_stock_modules_and_prints_the_measured_deviation(tiny_bases, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="llm2vec_hf.checkpoint")  # the CLI prints these records on stderr
    out = tmp_path / "stock-mean"
    assert cli.main(["export", str(tiny_bases["llama"]), "--output", str(out), "--pooling", "mean",
                     "--max-length", "48", "--st-modules", "stock"]) == 0
    line = next(r.getMessage() for r in caplog.records if "NOT the exact LLM2Vec vectors" in r.getMessage())
    assert next(r for r in caplog.records if "NOT the exact" in r.getMessage()).levelname == "WARNING"
    assert "mean cosine" in line and "min cosine" in line and f"on {len(STOCK_SAMPLE)} sample inputs" in line
    assert _module_types(out) == STOCK_MODULES
    from sentence_transformers import SentenceTransformer

    stock = SentenceTransformer(str(out))  # no trust_remote_code
    exact = LLM2Vec.from_pretrained(str(out)).encode(["what is attention?"], show_progress_bar=False).numpy()
    got = stock.encode(["what is attention?"], convert_to_numpy=True)
    cosine = float((got * exact).sum() / np.linalg.norm(got) / np.linalg.norm(exact))
    assert 0.0 < cosine < 1 - 1e-6  # measured as different, and it is
    card = (out / "README.md").read_text()
    assert "stock sentence-transformers modules" in card and "not the exact LLM2Vec vectors" in card
    # and --st-modules remote keeps the LLM2Vec module where stock would be exact
    remote = tmp_path / "remote-last"
    assert cli.main(["export", str(tiny_bases["llama"]), "--output", str(remote), "--pooling", "last_token",
                     "--max-length", "48", "--st-modules", "remote"]) == 0
    assert _module_types(remote) == [LLM2VEC_MODULE]


#: TEI's router parses 1_Pooling/config.json into `PoolConfig { pooling_mode_cls_token: bool,
#: pooling_mode_mean_tokens: bool, #[serde(default)] pooling_mode_lasttoken: bool }` and takes the first true one.
TEI_REQUIRED = ("pooling_mode_cls_token", "pooling_mode_mean_tokens")


def _tei_pool(config: dict) -> str:
    for key in TEI_REQUIRED:
        assert isinstance(config[key], bool), key  # a missing key fails TEI's parse
    for key, pool in (("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean"),
                      ("pooling_mode_lasttoken", "last_token")):
        if config.get(key):
            return pool
    raise AssertionError(f"TEI refuses {config}")


@pytest.mark.parametrize("pooling_mode,tei", [("mean", "mean"), ("last_token", "last_token"),
                                              ("eos_token", "last_token"), ("bos_token", "cls"),
                                              ("weighted_mean", None)])
def test_tei_pooling_config(exported, pooling_mode, tei):
    from sentence_transformers.sentence_transformer.modules import Pooling

    folder = exported("llama", pooling_mode)
    path = folder / "1_Pooling" / "config.json"
    if tei is None:  # TEI has no weighted mean: it refuses to start without --pooling, as it should
        assert not path.exists()
        return
    config = json.loads(path.read_text())
    assert _tei_pool(config) == tei
    assert config["embedding_dimension"] == 32
    stock_mode = {"mean": "mean", "last_token": "lasttoken", "cls": "cls"}[tei]
    assert Pooling.load(str(folder / "1_Pooling")).pooling_mode == stock_mode  # sentence-transformers reads it too


def test_written_files_are_what_sentence_transformers_saves(exported, tiny_bases, tmp_path):
    """export writes modules.json, sentence_bert_config.json and config_sentence_transformers.json itself (it has
    written the weights already); they hold what sentence-transformers' own save writes for the same model."""
    from sentence_transformers import SentenceTransformer

    # qwen3, not qwen2: transformers 5.24+ loads every qwen2 folder with Qwen2Tokenizer, which adds NFC to this
    # tokenizer, so a qwen2 base gets the exact module (test_settings_rules.py::test_stock_layout_needs_the_exact_tokenizer_ids)
    export_checkpoint(str(tiny_bases["qwen3"]), str(tmp_path / "qwen3-stock"), pooling_mode="last_token",
                              max_length=48, prompts={"query": "Find passages"})
    for folder, trust in ((exported("llama", "mean"), True), (tmp_path / "qwen3-stock", False)):
        assert _module_types(folder) == ([LLM2VEC_MODULE] if trust else STOCK_MODULES)
        resaved = tmp_path / "resaved" / folder.name
        SentenceTransformer(str(folder), trust_remote_code=trust).save_pretrained(str(resaved))
        for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                     "1_Pooling/config.json"):
            ours, theirs = (json.loads((f / name).read_text()) for f in (folder, resaved))
            if name == "config_sentence_transformers.json":
                ours.pop("__version__"), theirs.pop("__version__")
                ours.pop("requirements")  # read by sentence-transformers, but not written by it
                theirs.pop("requirements", None)
            if name == "sentence_bert_config.json":
                ours.pop("max_seq_length"), theirs.pop("max_seq_length", None)  # see _transformer_config
                ours.pop("processor_kwargs", None)
            if name == "1_Pooling/config.json" and not trust:  # TEI's keys; the LLM2Vec module's save writes them
                ours = {k: v for k, v in ours.items() if not k.startswith("pooling_mode_")}
            assert ours == theirs, (folder.name, name)
