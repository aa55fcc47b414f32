"""One rule for every command that writes (docs/reliability.md, "Outputs"): an output never equals, contains or
lies inside an input, and an existing output is replaced only with --overwrite. Each refusal is one line and
leaves every file as it was."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.cli import assert_one_line, run_cli
from helpers.weights import save_lora
from llm2vec_hf.errors import LLM2VecError
from llm2vec_hf.output_paths import overlap, refuse_existing, refuse_overlap


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path -> sha256 (what must survive a refusal unchanged)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def runs(tiny_bases, tmp_path):
    """runs/base (a copy of the tiny Llama), runs/adapter, and an unrelated runs/other-run."""
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(tiny_bases["llama"], root / "base")
    save_lora(root / "base", root / "adapter")
    (root / "other-run").mkdir()
    (root / "other-run" / "results.json").write_text('{"keep": true}')
    return root


@pytest.mark.parametrize("output,how", [
    ("{runs}", "contains the base"),                  # the parent of the base: every other run would go
    ("{runs}/base", "is the base"),
    ("{runs}/adapter", "is the adapter"),
    ("{runs}/base/export", "lies inside the base"),
    ("{runs}/adapter/../base", "is the base"),        # spelled differently
])
def test_export_never_writes_over_or_into_its_inputs(runs, capsys, output, how):
    before = tree_digest(runs)
    code, _, err = run_cli(["export", runs / "base", "--adapter", runs / "adapter",
                         "--output", output.format(runs=runs), "--overwrite"], capsys)
    assert_one_line(code, err, how)
    assert tree_digest(runs) == before
    assert sorted(p.name for p in runs.iterdir()) == ["adapter", "base", "other-run"]


def test_export_through_a_link_to_the_parent_of_the_base_is_refused(runs, tmp_path, capsys):
    link = tmp_path / "alias"
    link.symlink_to(runs, target_is_directory=True)
    before = tree_digest(runs)
    code, _, err = run_cli(["export", runs / "base", "--output", link / "base" / "x"], capsys)
    assert_one_line(code, err, "lies inside the base")
    assert tree_digest(runs) == before


def test_save_never_writes_over_the_folder_it_was_loaded_from(runs):
    from llm2vec_hf import LLM2Vec

    model = LLM2Vec.from_pretrained(str(runs / "base"))
    before = tree_digest(runs)
    with pytest.raises(LLM2VecError, match="is the base"):
        model.save(str(runs / "base"), overwrite=True)
    assert tree_digest(runs) == before


@pytest.fixture()
def texts(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("one\ntwo\n")
    return path


def test_encode_replaces_an_existing_output_only_with_overwrite(exported, texts, tmp_path, capsys):
    output = tmp_path / "vectors.npy"
    np.save(output, np.zeros((1, 1), dtype=np.float32))
    before = output.read_bytes()
    code, _, err = run_cli(["encode", exported("llama"), "--input", texts, "--output", output], capsys)
    assert_one_line(code, err, "--overwrite")
    assert output.read_bytes() == before
    assert run_cli(["encode", exported("llama"), "--input", texts, "--output", output, "--overwrite"], capsys)[0] == 0
    assert np.load(output).shape == (2, 32)


def test_encode_output_inside_the_checkpoint_is_refused(exported, texts, capsys):
    folder = exported("llama")
    before = tree_digest(folder)
    code, _, err = run_cli(["encode", folder, "--input", texts, "--output", folder / "vectors.npy"], capsys)
    assert_one_line(code, err, "lies inside the model")
    assert tree_digest(folder) == before


def _recipe(base: Path, corpus: Path, output_dir: Path, **values) -> dict:
    return {"stage": "simcse", "model_name_or_path": str(base), "train_file": str(corpus), "lora_r": 4,
            "output_dir": str(output_dir), "max_steps": 1, "use_cpu": True, "report_to": "none", **values}


@pytest.mark.parametrize("where,how", [("base", "is the base"), ("base/sub", "lies inside the base"),
                                       ("data", "contains the train_file")])
def test_train_output_dir_overlapping_an_input_is_refused(runs, tmp_path, where, how):
    """An adapter written into the base folder would be auto-loaded by transformers with every later load of it."""
    from llm2vec_hf.training import parse_recipe, run_training

    (tmp_path / "data").mkdir()
    corpus = tmp_path / "data" / "corpus.txt"
    corpus.write_text("a text\n" * 8)
    target = runs / where if where.startswith("base") else tmp_path / where
    before = tree_digest(runs)
    with pytest.raises(LLM2VecError, match=how):
        run_training(parse_recipe(_recipe(runs / "base", corpus, target)))
    assert tree_digest(runs) == before
    assert not (runs / "base" / "adapter_config.json").exists()


def test_train_into_an_earlier_runs_output_needs_overwrite_output_dir(runs, tmp_path):
    from llm2vec_hf.training import parse_recipe, run_training

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a text\n" * 8)
    before = tree_digest(runs / "adapter")
    with pytest.raises(LLM2VecError, match="overwrite_output_dir"):
        run_training(parse_recipe(_recipe(runs / "base", corpus, runs / "adapter")))
    assert tree_digest(runs / "adapter") == before


def test_eval_output_rule(exported, tmp_path, capsys):
    folder = exported("llama")
    before = tree_digest(folder)
    code, _, err = run_cli(["eval", folder, "--tasks", "word:pos", "--output", folder], capsys)
    assert_one_line(code, err, "is the model")
    assert tree_digest(folder) == before
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text(json.dumps({"earlier": True}))
    code, _, err = run_cli(["eval", folder, "--tasks", "word:pos", "--output", results], capsys)
    assert_one_line(code, err, "--overwrite")
    assert json.loads((results / "summary.json").read_text()) == {"earlier": True}


def test_demo_replaces_an_earlier_demo_only_with_overwrite(tmp_path):
    from llm2vec_hf.demo.assets import default_model_path
    from llm2vec_hf.demo.pipeline import prepare_output

    earlier = prepare_output(tmp_path / "demo")
    (earlier / "results.json").write_text("{}")
    with pytest.raises(LLM2VecError, match="--overwrite"):
        prepare_output(earlier)
    assert (earlier / "results.json").exists()
    assert not (prepare_output(earlier, overwrite=True) / "results.json").exists()
    with pytest.raises(LLM2VecError, match="lies inside the packaged default model"):
        prepare_output(Path(default_model_path()) / "demo")


def test_existing_output_rule():
    with pytest.raises(LLM2VecError, match="--overwrite"):
        refuse_existing(__file__, overwrite=False)
    refuse_existing(__file__, overwrite=True)
    refuse_existing(os.path.join(os.path.dirname(__file__), "no-such-output"), overwrite=False)


# ---------------------------------------------------------------------------------------------------------------
# Property: the rule against an independent model of paths (realpath and string prefixes)
# ---------------------------------------------------------------------------------------------------------------
_NAMES = st.sampled_from(["a", "b", "c", "..", "."])


def _model_overlap(output: str, source: str) -> str | None:
    out, src = os.path.realpath(output), os.path.realpath(source)
    if out == src:
        return "is"
    if out.startswith(src + os.sep):
        return "lies inside"
    if src.startswith(out + os.sep):
        return "contains"
    return None


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(output=st.lists(_NAMES, min_size=0, max_size=4), source=st.lists(_NAMES, min_size=0, max_size=4),
       link=st.lists(_NAMES, min_size=0, max_size=3))
def test_overlap_matches_a_model_of_paths(tmp_path_factory, output, source, link):
    """A fixed tree (a/b/c folders, a file a/b/f, and a link l -> a/<link>) with outputs and inputs spelled with
    "..", "." and the link: the rule sees what realpath sees."""
    root = tmp_path_factory.mktemp("paths")
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    (root / "l").symlink_to(root.joinpath("a", *link), target_is_directory=True)
    out = os.path.join(root, "l", *output)
    src = os.path.join(root, "a", *source)
    if not os.path.exists(src):
        assert overlap(out, src) is None
        return
    assert overlap(out, src) == _model_overlap(out, src), (out, src)
    refused = _model_overlap(out, src) is not None
    try:
        refuse_overlap(out, [("input", src)])
    except LLM2VecError:
        assert refused
    else:
        assert not refused
