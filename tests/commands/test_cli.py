"""The ``llm2vec-hf`` command line: export and encode, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm2vec_hf import LLM2Vec
from llm2vec_hf.cli import main


def test_export_then_encode_txt_and_jsonl(tiny_bases, tmp_path, capsys):
    out = tmp_path / "ckpt"
    code = main(["export", str(tiny_bases["qwen3"]), "--output", str(out), "--pooling", "mean",
                 "--max-length", "64", "--prompt", "query=Retrieve passages: "])
    assert code == 0 and (out / "config.json").is_file()
    texts = tmp_path / "texts.txt"
    texts.write_text("first line of text\nsecond line\n")
    assert main(["encode", str(out), "--input", str(texts), "--output", str(tmp_path / "a.npy"), "--prompt-name", "query"]) == 0
    records = tmp_path / "texts.jsonl"
    records.write_text(json.dumps({"text": "first line of text", "instruction": "Retrieve passages:"}) + "\n"
                       + json.dumps({"text": "second line"}) + "\n")
    assert main(["encode", str(out), "--input", str(records), "--output", str(tmp_path / "b.npy"), "--batch-size", "1"]) == 0
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    expected = LLM2Vec.from_pretrained(str(out)).encode(
        [["Retrieve passages: ", "first line of text"], ["Retrieve passages: ", "second line"]], show_progress_bar=False
    )
    assert a.dtype == np.float32 and a.shape == (2, 32)
    assert np.abs(a - expected.numpy()).max() <= 1e-5
    assert np.abs(b[0] - a[0]).max() <= 1e-5  # same instruction, given per record
    assert np.abs(b[1] - a[1]).max() > 1e-4  # no instruction this time


@pytest.mark.parametrize(
    "content,suffix,message",
    [
        ('{"text": "ok"}\n{"text": \n', ".jsonl", ":2: malformed JSON"),
        ('{"txt": "no text field"}\n', ".jsonl", ":1: each record needs a string field 'text'"),
        ("", ".txt", "no texts"),
        ("a\n\nb\n", ".txt", ":2: empty line"),
        ("a\n", ".csv", "must be .txt"),
    ],
)
def test_encode_bad_files_give_one_line(exported, tmp_path, capsys, content, suffix, message):
    path = tmp_path / f"input{suffix}"
    path.write_text(content)
    model = exported("llama")
    capsys.readouterr()  # building the fixture may print progress bars
    assert main(["encode", str(model), "--input", str(path), "--output", str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "o.npy").exists()


def test_missing_model_and_unknown_prompt(exported, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("hello\n")
    assert main(["encode", str(tmp_path / "missing"), "--input", str(texts), "--output", str(tmp_path / "o.npy")]) == 2
    assert "No such model folder" in capsys.readouterr().err
    assert main(["encode", str(exported("llama")), "--input", str(texts), "--output", str(tmp_path / "o.npy"),
                 "--prompt-name", "nope"]) == 2
    assert "no prompt named 'nope'" in capsys.readouterr().err


def test_export_rejects_unknown_pooling(tiny_bases, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(tiny_bases["llama"]), "--output", str(tmp_path / "o"), "--pooling", "max"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("verbose", [False, True])
def test_commands_hide_deprecation_notices_raised_inside_dependencies_only(monkeypatch, recwarn, verbose):
    """While a command runs, a FutureWarning/DeprecationWarning attributed to a dependency's module is hidden,
    whatever its wording; one attributed to llm2vec_hf, and any other warning, still shows; --verbose shows all."""
    import warnings

    from llm2vec_hf import cli

    def run(args):
        for module in ("mteb.models.x", "peft.tuners.lora", "transformers.modeling_utils",
                       "llm2vec_hf.checkpoint.export"):
            for category in (FutureWarning, DeprecationWarning, UserWarning):
                warnings.warn_explicit(f"{category.__name__} from {module}", category, f"{module}.py", 1,
                                       module=module)
        return 0

    monkeypatch.setattr(cli, "run_command", run)
    assert main(["--verbose", "demo"] if verbose else ["demo"]) == 0
    shown = {str(w.message) for w in recwarn}
    assert "UserWarning from mteb.models.x" in shown and "FutureWarning from llm2vec_hf.checkpoint.export" in shown
    assert "DeprecationWarning from llm2vec_hf.checkpoint.export" in shown
    for module in ("mteb.models.x", "peft.tuners.lora", "transformers.modeling_utils"):
        for category in ("FutureWarning", "DeprecationWarning"):
            assert (f"{category} from {module}" in shown) == verbose
