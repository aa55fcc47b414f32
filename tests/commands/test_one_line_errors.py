"""One clear line (exit status 2) for bad recipes, eval and encode options, and refused resumes."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from helpers.cli import assert_one_line, run_cli
from helpers.weights import rewrite_weights
from llm2vec_hf.errors import LLM2VecError


RECIPE = "stage: simcse\nmodel_name_or_path: {base}\ntrain_file: {data}\noutput_dir: {out}\n"


@pytest.mark.parametrize(
    "line,needles",
    [
        ("lora_r: [1, 2]", ["lora_r in ", "recipe.yaml", "must be an integer", "list"]),
        ("lora_r: abc", ["lora_r in ", "must be an integer", "'abc'"]),
        ("lora_r: true", ["lora_r in ", "must be an integer", "True"]),
        ("max_seq_length: 3.5", ["max_seq_length in ", "must be an integer"]),
        ("learning_rate: [0.1]", ["learning_rate in ", "must be a number", "list"]),
        ("simcse_dropout: {a: 1}", ["simcse_dropout in ", "must be a number", "dict"]),
        ("use_cpu: maybe", ["use_cpu in ", "true or false"]),
        ("lr_scheduler_type: bogus", ["lr_scheduler_type in ", "must be one of", "cosine"]),
    ],
)
def test_recipe_values_of_the_wrong_type_name_the_key_and_the_file(tiny_bases, tmp_path, capsys, line, needles):
    recipe = tmp_path / "recipe.yaml"
    data = tmp_path / "data.txt"
    data.write_text("a sentence\n" * 4)
    recipe.write_text(RECIPE.format(base=tiny_bases["llama"], data=data, out=tmp_path / "run") + line + "\n")
    code, _, err = run_cli(["train", recipe], capsys)
    message = assert_one_line(code, err, *needles)
    assert "command-line" not in message and "not supported between" not in message


def test_a_bad_command_line_value_is_still_called_one(tiny_bases, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(base=tiny_bases["llama"], data=tmp_path / "d.txt", out=tmp_path / "run"))
    code, _, err = run_cli(["train", recipe, "--lora_r", "abc"], capsys)
    assert_one_line(code, err, "command-line", "lora_r")


@pytest.mark.parametrize("name", ["runs/missing-model", "./missing-model"])
def test_eval_on_a_missing_local_folder_names_it(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    code, _, err = run_cli(["eval", name, "--tasks", "STS12", "--output", tmp_path / "results"], capsys)
    message = assert_one_line(code, err, "No such model folder", name)
    assert "connect" not in message.lower() and "internet" not in message.lower()


def test_encode_with_a_stray_placeholder_is_one_line(exported, tmp_path, capsys):
    """A checkpoint whose stored template has a stray field (made by hand or an older export) is refused when it
    loads, with one line, instead of a KeyError in the middle of encoding."""
    folder = tmp_path / "ckpt"
    shutil.copytree(exported("llama"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["llm2vec"]["text_template"] = "<s>{system} {text}"
    (folder / "config.json").write_text(json.dumps(config))
    source = tmp_path / "in.txt"
    source.write_text("hello\n")
    code, _, err = run_cli(["encode", folder, "--input", source, "--output", tmp_path / "out.npy"], capsys)
    assert_one_line(code, err, "other than {text}: system")


def _train_with_checkpoint(tiny, tmp_path, **overrides):
    from llm2vec_hf.training import parse_recipe, run_training

    values = {"stage": "simcse", "model_name_or_path": str(tiny["base"]), "train_file": str(tiny["corpus"]),
              "max_seq_length": 32, "lora_r": 4, "output_dir": str(tmp_path / "run"), "per_device_train_batch_size": 4,
              "learning_rate": 1e-3, "max_steps": 2, "save_strategy": "steps", "save_steps": 2, "report_to": "none",
              "seed": 7, "use_cpu": True, "disable_tqdm": True, "max_train_samples": 16, "logging_steps": 1}
    values.update(overrides)
    return run_training(parse_recipe(values))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from llm2vec_hf.training.tiny_data import prepare_tiny

    return prepare_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"lora_r": 8}, "was lora_r changed"),
        ({"learning_rate": 5e-3}, "learning_rate 0.001 -> 0.005"),
        ({"seed": 8}, "seed 7 -> 8"),
    ],
)
@pytest.mark.slow
def test_resuming_a_run_with_other_settings_is_refused(tiny, tmp_path, change, needle):
    _train_with_checkpoint(tiny, tmp_path)
    assert (tmp_path / "run" / "checkpoint-2" / "llm2vec_run.json").is_file()
    with pytest.raises(LLM2VecError, match=re.escape(needle)) as info:
        _train_with_checkpoint(tiny, tmp_path, resume_from_checkpoint="true", max_steps=4, **change)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_resuming_from_a_checkpoint_missing_adapter_tensors_is_refused(tiny, tmp_path):
    _train_with_checkpoint(tiny, tmp_path)
    weights = tmp_path / "run" / "checkpoint-2" / "adapter_model.safetensors"
    rewrite_weights(weights, keep=lambda k: "lora_B" not in k)
    with pytest.raises(LLM2VecError, match="adapter tensors are missing"):
        _train_with_checkpoint(tiny, tmp_path, resume_from_checkpoint="true", max_steps=4)
