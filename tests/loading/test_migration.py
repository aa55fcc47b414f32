"""Migrating an official McGill-NLP two-stage model (base + MNTP LoRA + supervised LoRA) into one checkpoint.

The fixtures in tests/fixtures/reference/migration/ are adapters in the official layout on a tiny llama base,
with vectors from the official llm2vec 0.2.3 doing its two-stage load (scripts/make_reference_fixtures.py).
``export --adapter MNTP --adapter SUPERVISED`` must give one folder whose three loading paths match those
vectors, and whose encoding settings come from the supervised adapter's llm2vec_config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.samples import FIXTURES, REPO
from llm2vec_hf import LLM2Vec, cli
from llm2vec_hf.checkpoint.export import export_checkpoint

MIGRATION = FIXTURES / "reference" / "migration"
REFERENCE = json.loads((MIGRATION / "reference.json").read_text())
TOL = 1e-4


def _cases(adapters: list[str]) -> list[dict]:
    return [c for c in REFERENCE["cases"] if c["adapters"] == adapters]


def _id(case: dict) -> str:
    return f"{case['input_set']}-skip{case['skip_instruction']}-len{case['max_length']}"


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("migrated") / "llm2vec-tiny-mntp-supervised"
    return Path(export_checkpoint(str(MIGRATION / "base"), str(out),
                                  adapters=[str(MIGRATION / "mntp"), str(MIGRATION / "supervised")]))


@pytest.fixture(scope="module")
def automodel(migrated):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(migrated), trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__  # the shipped code
    return model, AutoTokenizer.from_pretrained(str(migrated))


def test_fixture_is_the_official_two_stage_layout():
    assert REFERENCE["llm2vec_version"] == "0.2.3"
    for stage in ("mntp", "supervised"):
        config = json.loads((MIGRATION / stage / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and (MIGRATION / stage / "adapter_model.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(MIGRATION / "mntp" / "adapter_model.safetensors"), "pt") as handle:
        assert all(k.startswith("base_model.model.layers.") for k in handle.keys())
    assert len(_cases(["mntp", "supervised"])) == 5


def test_llm2vec_config_of_the_adapter_carries_over(migrated):
    official = json.loads((MIGRATION / "supervised" / "llm2vec_config.json").read_text())
    assert json.loads((migrated / "llm2vec_config.json").read_text()) == official
    assert official["max_length"] == 64 and official["doc_max_length"] == 48  # not the library defaults
    config = json.loads((migrated / "config.json").read_text())
    assert {k: config["llm2vec"][k] for k in official} == official
    assert json.loads((migrated / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    # no adapter files and no pickles in the one checkpoint; the card names both stages
    names = {p.name for p in migrated.iterdir()}
    assert "adapter_config.json" not in names and not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    card = (migrated / "README.md").read_text()
    assert "| 1 | MNTP" in card and "| 2 | supervised contrastive" in card


@pytest.mark.parametrize("case", _cases(["mntp", "supervised"]), ids=_id)
@pytest.mark.slow
def test_two_stage_migration_matches_official(migrated, automodel, case):
    expected = np.array(case["embeddings"], dtype=np.float32)
    overrides = {k: case[k] for k in ("skip_instruction", "max_length", "doc_max_length")}
    inputs = case["inputs"]

    library = LLM2Vec.from_pretrained(str(migrated), **overrides).encode(inputs, batch_size=4, show_progress_bar=False)
    assert np.abs(library.numpy() - expected).max() <= TOL

    model, tokenizer = automodel
    remote = model.encode(inputs, tokenizer, batch_size=4, **overrides).numpy()
    assert np.abs(remote - expected).max() <= TOL

    stored = json.loads((migrated / "llm2vec_config.json").read_text())
    if all(stored[k] == v for k, v in overrides.items()):  # sentence-transformers runs the stored settings
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(migrated), trust_remote_code=True)
        rows = [st.encode([x[1]], prompt=x[0].strip() + " ")[0] if isinstance(x, list) else st.encode([x])[0]
                for x in inputs]
        assert np.abs(np.stack(rows) - expected).max() <= TOL


@pytest.mark.slow
def test_mntp_only_migration_through_the_cli(tmp_path, capsys):
    out = tmp_path / "mntp-only"
    code = cli.main(["export", str(MIGRATION / "base"), "--adapter", str(MIGRATION / "mntp"), "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    l2v = LLM2Vec.from_pretrained(str(out))
    for case in _cases(["mntp"]):
        got = l2v.encode(case["inputs"], batch_size=4, show_progress_bar=False).numpy()
        assert np.abs(got - np.array(case["embeddings"], dtype=np.float32)).max() <= TOL, _id(case)
    # the MNTP adapter repo has no llm2vec_config.json: the official defaults apply
    assert json.loads((out / "llm2vec_config.json").read_text())["max_length"] == 512


def test_skipping_the_mntp_adapter_does_not_match(tmp_path):
    """Both stages are needed: the comparison above is one that can fail."""
    out = export_checkpoint(str(MIGRATION / "base"), str(tmp_path / "supervised-only"),
                            adapters=[str(MIGRATION / "supervised")])
    case = _cases(["mntp", "supervised"])[0]
    got = LLM2Vec.from_pretrained(out).encode(case["inputs"], show_progress_bar=False).numpy()
    assert np.abs(got - np.array(case["embeddings"], dtype=np.float32)).max() > 10 * TOL


# --- the official chat-template wrapping, keyed on hub names there, stored in the checkpoint here -------------

TEMPLATES = json.loads((MIGRATION / "templates.json").read_text())
DOC = (REPO / "docs" / "migration.md").read_text()


@pytest.fixture(scope="module")
def templated(tmp_path_factory):
    root = tmp_path_factory.mktemp("templated")
    folders = {}

    def get(template: str) -> Path:
        if template not in folders:
            folders[template] = Path(export_checkpoint(str(MIGRATION / "base"), str(root / str(len(folders))),
                                                       text_template=template, max_length=64, doc_max_length=48))
        return folders[template]

    return get


@pytest.mark.parametrize("case", TEMPLATES["cases"],
                         ids=lambda c: f"{c['hub_name'].split('/')[1]}-{c['input_set']}-skip{c['skip_instruction']}")
@pytest.mark.slow
def test_text_template_reproduces_official_wrapping(templated, case):
    """`export --text-template VALUE` on a base gives the vectors the official library gives when the same base
    is loaded under the hub name it keys its wrapping on (scripts/make_template_reference.py)."""
    from transformers import AutoModel, AutoTokenizer

    folder = templated(case["text_template"])
    expected = np.array(case["embeddings"], dtype=np.float32)
    skip = case["skip_instruction"]
    library = LLM2Vec.from_pretrained(str(folder), skip_instruction=skip).encode(
        case["inputs"], batch_size=4, show_progress_bar=False)
    assert np.abs(library.numpy() - expected).max() <= TOL
    model = AutoModel.from_pretrained(str(folder), trust_remote_code=True)
    remote = model.encode(case["inputs"], AutoTokenizer.from_pretrained(str(folder)), skip_instruction=skip).numpy()
    assert np.abs(remote - expected).max() <= TOL
    if skip:  # the checkpoint's own setting: sentence-transformers applies the stored template too
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(folder), trust_remote_code=True)
        rows = [st.encode([x[1]], prompt=x[0].strip() + " ")[0] if isinstance(x, list) else st.encode([x])[0]
                for x in case["inputs"]]
        assert np.abs(np.stack(rows) - expected).max() <= TOL
    # without the template the vectors are different: the comparison can fail
    plain = LLM2Vec.from_pretrained(str(MIGRATION / "base"), skip_instruction=skip, max_length=64,
                                    doc_max_length=48).encode(case["inputs"], show_progress_bar=False)
    assert np.abs(plain.numpy() - expected).max() > 10 * TOL


def test_docs_give_the_exact_text_template():
    """docs/migration.md's flag values, decoded by bash, are the templates the reference was checked with."""
    import re
    import subprocess

    by_hub_name = {c["hub_name"]: c["text_template"] for c in TEMPLATES["cases"]}
    llama3 = re.search(r"--text-template (\$'[^']*')", DOC).group(1)
    decoded = subprocess.run(["bash", "-c", f"printf %s {llama3}"], capture_output=True, text=True, check=True).stdout
    assert decoded == by_hub_name["meta-llama/Meta-Llama-3-8B-Instruct"]
    assert 'text_template="<|start_header_id|>user<|end_header_id|>\\n\\n{text}<|eot_id|>"' in DOC
    assert f"`'{by_hub_name['mistralai/Mistral-7B-Instruct-v0.2']}'`" in DOC
