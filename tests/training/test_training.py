"""Training: recipes, bad input, MNTP masking, the tiny pipelines end to end, resume, gradient checkpointing.

Everything runs on tiny models (hidden 32, 2 layers) built on the spot; nothing is downloaded. The DDP tests
live in test_training_ddp.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llm2vec_hf.errors import AdapterMismatchError, LLM2VecError
from llm2vec_hf.training import parse_recipe, run_training
from llm2vec_hf.training.data import DataError, GroupedBatchSampler
from llm2vec_hf.training.tiny_data import prepare_tiny
from helpers.loss_recording import losses

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
#: The tiny recipes: the CPU try-out's and `llm2vec-hf demo`'s (package data).
TINY = REPO / "src" / "llm2vec_hf" / "demo" / "recipes"


pytestmark = pytest.mark.usefixtures("one_thread", "recorded_losses")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return prepare_tiny(tmp_path_factory.mktemp("tiny"))


def recipe_values(stage: str, tiny: dict[str, Path], output_dir: Path, **overrides) -> dict:
    """A small recipe of the given stage on the tiny base (a few steps on CPU)."""
    values = {
        "stage": stage,
        "model_name_or_path": str(tiny["base"]),
        "train_file": str(tiny["supervised"] if stage == "supervised" else tiny["corpus"]),
        "max_seq_length": 32,
        "lora_r": 4,
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-2,
        "max_steps": 12,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 7,
        "use_cpu": True,
        "disable_tqdm": True,
    }
    if stage == "mntp":
        values.update(max_train_samples=400, max_eval_samples=8, per_device_eval_batch_size=8)
    if stage == "simcse":
        values.update(max_train_samples=400)
    values.update(overrides)
    return values


def train(stage, tiny, output_dir, **overrides):
    return run_training(parse_recipe(recipe_values(stage, tiny, output_dir, **overrides)))


def falls(losses: list[float], k: int = 3) -> bool:
    return sum(losses[-k:]) / k < sum(losses[:k]) / k


# --------------------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------------------
RECIPES = sorted(p for p in CONFIGS.rglob("*.yaml") if "accelerate" not in p.parts) + sorted(TINY.glob("*.yaml"))


def test_recipes_exist_for_every_stage_and_model():
    names = {p.relative_to(CONFIGS).as_posix() for p in RECIPES if CONFIGS in p.parents}
    assert not (CONFIGS / "tiny").exists()  # one tiny set: the package's
    for stage in ("mntp", "simcse", "supervised"):
        assert (TINY / f"{stage}.yaml").is_file()
        for model in ("sheared-llama-1.3b", "llama-2-7b-chat", "mistral-7b-instruct-v0.2",
                      "meta-llama-3-8b-instruct", "meta-llama-3.1-8b-instruct", "qwen2.5-7b-instruct",
                      "gemma-2-9b-it", "llama-3.2-1b-instruct", "llama-3.2-3b-instruct", "qwen3-0.6b", "qwen3-4b",
                      "qwen3-8b", "qwen3-30b-a3b", "gemma-3-1b-it", "gemma-3-4b-it", "phi-4-mini-instruct",
                      "smollm3-3b"):
            assert f"{stage}/{model}.yaml" in names, f"missing recipe {stage}/{model}.yaml"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_recipe_parses(path):
    # The GPU recipes ask for bf16, which TrainingArguments refuses on a machine without a GPU unless use_cpu.
    recipe = parse_recipe(path, [] if torch.cuda.is_available() else ["--use_cpu", "true"])
    assert recipe.model.stage == path.stem if path.parent == TINY else recipe.model.stage == path.parent.name
    assert recipe.training.output_dir
    # A bounded run: the Trainer's own max_steps (tiny recipes) or the official stop step (real recipes).
    assert recipe.training.max_steps > 0 or recipe.schedule.stop_after_n_steps == 1000


def test_gradient_checkpointing_in_a_recipe_parses_without_the_deprecation_warning():
    """transformers 5.24 renamed it activation_checkpointing and warns on the old name; recipes keep the name
    every supported transformers knows, and the parser hands it over under the new one where there is one."""
    import warnings

    from llm2vec_hf.training.lora import take_gradient_checkpointing

    cpu = [] if torch.cuda.is_available() else ["--use_cpu", "true"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".gradient_checkpointing. is deprecated")
        recipe = parse_recipe(CONFIGS / "supervised" / "sheared-llama-1.3b.yaml", cpu)
    assert take_gradient_checkpointing(recipe.training)


def test_reference_hyperparameters_in_recipes():
    cpu = [] if torch.cuda.is_available() else ["--use_cpu", "true"]
    mntp = parse_recipe(CONFIGS / "mntp" / "mistral-7b-instruct-v0.2.yaml", cpu)
    assert (mntp.mntp.mlm_probability, mntp.mntp.data_collator_type, mntp.mntp.mask_token_type) == (0.8, "all_mask", "blank")
    llama = parse_recipe(CONFIGS / "mntp" / "meta-llama-3-8b-instruct.yaml", cpu)
    assert (llama.mntp.mlm_probability, llama.mntp.data_collator_type) == (0.2, "default")
    assert llama.training.bf16 and llama.training.gradient_checkpointing and llama.model.dtype == "bfloat16"
    assert (llama.training.per_device_train_batch_size, llama.data.max_seq_length) == (32, 512)
    simcse = parse_recipe(CONFIGS / "simcse" / "meta-llama-3-8b-instruct.yaml", cpu)
    assert (simcse.contrastive.simcse_dropout, simcse.contrastive.loss_scale, simcse.training.learning_rate) == (0.3, 20, 3e-5)
    assert (simcse.training.per_device_train_batch_size, simcse.data.max_seq_length) == (128, 128)
    supervised = parse_recipe(CONFIGS / "supervised" / "meta-llama-3-8b-instruct.yaml", cpu)
    assert (supervised.contrastive.loss_scale, supervised.training.learning_rate, supervised.training.warmup_steps) == (50, 2e-4, 300)
    assert supervised.training.per_device_train_batch_size == 64


def test_accelerate_configs_are_yaml_with_a_distributed_type():
    import yaml

    found = {p.stem: yaml.safe_load(p.read_text()) for p in (CONFIGS / "accelerate").glob("*.yaml")}
    assert {"ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"} <= set(found)
    assert found["ddp"]["distributed_type"] == "MULTI_GPU"
    assert found["fsdp"]["distributed_type"] == "FSDP"
    assert found["deepspeed_zero2"]["deepspeed_config"]["zero_stage"] == 2
    assert found["deepspeed_zero3"]["deepspeed_config"]["zero_stage"] == 3


def test_command_line_overrides_yaml_with_types(tmp_path):
    recipe = parse_recipe(TINY / "mntp.yaml", ["--max_steps", "7", "--learning_rate=0.5",
                                                           "--peft_model_name_or_path", "a", "b", "--bf16", "true"])
    assert recipe.training.max_steps == 7 and recipe.training.learning_rate == 0.5 and recipe.training.bf16 is True
    assert recipe.model.peft_model_name_or_path == ["a", "b"]
    assert recipe.model.lora_alpha is None and recipe.data.max_seq_length == 128  # from the YAML / defaults
    single = parse_recipe(TINY / "simcse.yaml")
    assert single.model.peft_model_name_or_path == ["runs/tiny/mntp"]


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((TINY / "mntp.yaml").read_text() + "\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"'learning_rat' \(did you mean 'learning_rate'\?\)"):
        parse_recipe(bad)
    with pytest.raises(ValueError, match=r"'max_stepz' \(did you mean 'max_steps'\?\)"):
        parse_recipe(TINY / "mntp.yaml", ["--max_stepz", "3"])
    with pytest.raises(ValueError, match="stage"):
        parse_recipe(TINY / "mntp.yaml", ["--stage", "pretrain"])
    with pytest.raises(ValueError, match="The recipe sets no 'stage', 'model_name_or_path'"):
        parse_recipe({"output_dir": "x", "train_file": "y"})
    with pytest.raises(ValueError, match="The recipe sets no 'output_dir'"):
        parse_recipe({"stage": "mntp", "model_name_or_path": "m", "train_file": "y"})
    with pytest.raises(ValueError, match="mask_token_type"):
        parse_recipe(TINY / "mntp.yaml", ["--mask_token_type", "star"])


def test_cli_prints_bad_input_as_one_line(tmp_path, capsys):
    from llm2vec_hf.cli import main

    code = main(["train", str(TINY / "mntp.yaml"), "--max_stepz", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "max_stepz" in err and err.startswith("llm2vec-hf train: error:")


# --------------------------------------------------------------------------------------------------------------
# Bad input: clear errors before training starts
# --------------------------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_missing_and_empty_data_files(tiny, tmp_path):
    with pytest.raises(DataError, match="not found"):
        train("mntp", tiny, tmp_path / "o1", train_file=str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="is empty"):
        train("simcse", tiny, tmp_path / "o2", train_file=str(_write(tmp_path / "empty.txt", "")))
    with pytest.raises(DataError, match="holds no text"):
        train("simcse", tiny, tmp_path / "o3", train_file=str(_write(tmp_path / "blank.txt", "\n  \n")))


def test_malformed_jsonl_names_the_line(tiny, tmp_path):
    good = json.dumps({"query": "q", "positive": "p"})
    path = _write(tmp_path / "bad.jsonl", f"{good}\n{good}\n{{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl, line 3: not valid JSON"):
        train("supervised", tiny, tmp_path / "o", train_file=str(path))


@pytest.mark.parametrize("missing", ["query", "positive"])
def test_record_missing_query_or_positive(tiny, tmp_path, missing):
    record = {"query": "q", "positive": "p", "negative": "n"}
    del record[missing]
    path = _write(tmp_path / "d.jsonl", json.dumps({"query": "a", "positive": "b"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=rf"line 2: record has no '{missing}'"):
        train("supervised", tiny, tmp_path / "o", train_file=str(path))


def test_too_few_negatives_is_an_error(tiny, tmp_path):
    path = _write(tmp_path / "d.jsonl", json.dumps({"query": "a", "positive": "b", "negative": ["c"]}) + "\n")
    with pytest.raises(DataError, match="record #1 has 1 negative"):
        train("supervised", tiny, tmp_path / "o", train_file=str(path), num_hard_negatives=2)


def test_unwritable_output_dir(tiny, tmp_path):
    blocker = _write(tmp_path / "a-file", "x")
    with pytest.raises(LLM2VecError, match="Cannot write to output_dir"):
        train("simcse", tiny, blocker / "out")


@pytest.mark.slow
def test_adapter_for_another_base_is_refused_before_training(tiny, tiny_bases, mntp_run, tmp_path):
    from llm2vec_hf.training.tiny_model import build_tiny_decoder

    wider = build_tiny_decoder(tmp_path / "wider", "llama", hidden_size=64)  # same family, other shapes
    for base, stage in ((tiny_bases["qwen2"], "simcse"), (wider, "supervised"), (wider, "mntp")):
        with pytest.raises(AdapterMismatchError, match="another base"):
            train(stage, tiny, tmp_path / stage, model_name_or_path=str(base),
                  peft_model_name_or_path=[mntp_run.adapter_dir])
        assert not (tmp_path / stage / "adapter_model.safetensors").exists()


def test_existing_checkpoints_need_resume(tiny, tmp_path):
    (tmp_path / "o" / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(LLM2VecError, match="resume_from_checkpoint true"):
        train("simcse", tiny, tmp_path / "o")


# --------------------------------------------------------------------------------------------------------------
# MNTP masking and the i-1 shift
# --------------------------------------------------------------------------------------------------------------
def _collator(**kwargs):
    from llm2vec_hf.training.mntp import MNTPDataCollator

    return MNTPDataCollator(mask_id=3, vocab_size=100, special_ids=frozenset({1, 2}), **kwargs)


def test_mntp_default_collator_80_10_10():
    torch.manual_seed(0)
    ids = torch.randint(10, 100, (64, 256))
    ids[:, 0] = 1  # BOS
    features = [{"input_ids": row.tolist()} for row in ids]
    batch = _collator(mlm_probability=0.3)(features)
    selected = batch["labels"] != -100
    assert torch.equal(batch["labels"][selected], ids[selected])
    assert not selected[:, 0].any()  # the BOS id is special
    rate = selected.float().mean().item()
    assert 0.27 < rate < 0.33
    masked = (batch["input_ids"] == 3) & selected
    unchanged = (batch["input_ids"] == ids) & selected
    assert 0.77 < masked.sum() / selected.sum() < 0.83
    assert 0.08 < unchanged.sum() / selected.sum() < 0.13  # 10 % kept + random tokens that hit the same id
    assert torch.equal(batch["input_ids"][~selected], ids[~selected])


def test_mntp_all_mask_collator_and_special_tokens():
    torch.manual_seed(0)
    ids = torch.randint(10, 100, (8, 64))
    ids[:, 0], ids[:, 10], ids[:, -1] = 1, 2, 2
    batch = _collator(mlm_probability=0.5, all_mask=True)([{"input_ids": row.tolist()} for row in ids])
    selected = batch["labels"] != -100
    assert (batch["input_ids"][selected] == 3).all()
    assert not selected[:, [0, 10, 63]].any()


def test_masked_accuracy_uses_the_shift():
    import numpy as np
    from transformers import EvalPrediction

    from llm2vec_hf.training.mntp import masked_accuracy

    labels = np.full((1, 5), -100)
    labels[0, 2], labels[0, 4] = 7, 9
    predictions = np.zeros((1, 5), dtype=int)
    predictions[0, 1] = 7  # position 1 predicts token 2: right
    predictions[0, 4] = 9  # position 4 "predicts" token 4 itself: not how MNTP reads, so wrong
    assert masked_accuracy(EvalPrediction(predictions=predictions, label_ids=labels))["accuracy"] == 0.5


def test_mntp_loss_predicts_token_i_from_position_i_minus_1(tiny):
    from llm2vec_hf.loading.models import load_bidirectional

    model, tokenizer, _ = load_bidirectional(str(tiny["base"]), for_mntp=True)
    ids = tokenizer(["The quick brown fox jumps over the lazy dog."], return_tensors="pt")["input_ids"]
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[0, 5] = ids[0, 3], ids[0, 5]
    out = model(input_ids=ids, labels=labels)
    logits = out.logits[0]
    manual = torch.nn.functional.cross_entropy(logits[[2, 4]], ids[0, [3, 5]])
    assert torch.allclose(out.loss, manual, atol=1e-6)


@pytest.mark.parametrize("mask_token_type", ["blank", "eos", "mask"])
def test_mask_token_types(tiny, mask_token_type):
    from llm2vec_hf.loading.models import load_bidirectional
    from llm2vec_hf.training.mntp import mask_token_id

    model, tokenizer, _ = load_bidirectional(str(tiny["base"]), for_mntp=True)
    mask_id = mask_token_id(tokenizer, model, mask_token_type)
    expected = {"blank": "_", "eos": tokenizer.eos_token, "mask": "<mask>"}[mask_token_type]
    assert tokenizer.convert_ids_to_tokens(mask_id) == expected
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)


# --------------------------------------------------------------------------------------------------------------
# Batching: one dataset per batch, global batches split across ranks
# --------------------------------------------------------------------------------------------------------------
def test_grouped_batches_come_from_one_dataset_and_split_per_rank():
    groups = ["a"] * 37 + ["b"] * 21 + ["c"] * 3
    single = GroupedBatchSampler(groups, batch_size=8, world_size=1, seed=3)
    double = GroupedBatchSampler(groups, batch_size=4, world_size=2, seed=3)
    batches = list(single)
    assert len(batches) == len(single) == 4 + 2  # c has fewer rows than a global batch
    assert all(len({groups[i] for i in b}) == 1 and len(b) == 8 for b in batches)
    chunks = list(double)
    assert len(chunks) == len(double) == 12
    assert [chunks[i] + chunks[i + 1] for i in range(0, 12, 2)] == batches  # same global batches
    assert sorted(i for b in batches for i in b) == sorted(set(i for b in batches for i in b))
    double.set_epoch(1)
    assert list(double) != chunks
    with pytest.raises(DataError, match="No dataset has enough rows"):
        GroupedBatchSampler(["a"] * 5, batch_size=4, world_size=2)


# --------------------------------------------------------------------------------------------------------------
# The tiny pipelines: mntp -> simcse -> export and mntp -> supervised -> export
# --------------------------------------------------------------------------------------------------------------
def tiny_recipe(stage: str, tiny, output_dir, *overrides: str):
    """The tiny recipe of the stage itself, with the data paths pointed at this test's folder and fewer steps."""
    data = tiny["supervised"] if stage == "supervised" else tiny["corpus"]
    paths = ["--model_name_or_path", str(tiny["base"]), "--train_file", str(data), "--output_dir", str(output_dir),
             "--disable_tqdm", "true"]
    return parse_recipe(TINY / f"{stage}.yaml", [*paths, *overrides])


@pytest.fixture(scope="module")
def mntp_run(tiny, tmp_path_factory, recorded_losses):
    # report_to is left to its default: TensorBoard where installed.
    return run_training(tiny_recipe("mntp", tiny, tmp_path_factory.mktemp("mntp"), "--max_steps", "16",
                                    "--gradient_checkpointing", "true", "--max_train_samples", "600"))


def _adapter_files(folder: str) -> set[str]:
    return {name for name in os.listdir(folder) if name.startswith("adapter_")}


def test_mntp_stage(mntp_run):
    assert falls(losses(mntp_run)), losses(mntp_run)
    assert _adapter_files(mntp_run.adapter_dir) == {"adapter_config.json", "adapter_model.safetensors"}
    # frequent tokens are predicted right after 16 steps; an accuracy that is not computed reads 0 or is absent
    assert 0 < mntp_run.metrics["eval_accuracy"] < 1 and mntp_run.metrics["eval_loss"] > 0
    assert Path(mntp_run.loss_curve).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "llm2vec-hf export" in mntp_run.summary and mntp_run.adapter_dir in mntp_run.summary
    events = list(Path(mntp_run.adapter_dir).rglob("events.out.tfevents.*"))
    try:
        import tensorboard  # noqa: F401

        assert events and mntp_run.trainer.args.report_to == ["tensorboard"]
    except ImportError:
        assert not events and mntp_run.trainer.args.report_to in (["none"], [])


def _encode(folder, texts):
    from sentence_transformers import SentenceTransformer

    return torch.as_tensor(SentenceTransformer(str(folder), device="cpu", trust_remote_code=True).encode(texts))


@pytest.mark.parametrize("stage", ["simcse", "supervised"])
@pytest.mark.slow
def test_tiny_pipeline_to_export(tiny, mntp_run, tmp_path, stage):
    from llm2vec_hf.checkpoint.export import export_checkpoint

    recipe = tiny_recipe(stage, tiny, tmp_path / stage, "--peft_model_name_or_path", mntp_run.adapter_dir,
                         "--max_steps", "12", "--report_to", "none")
    assert recipe.model.peft_model_name_or_path == [mntp_run.adapter_dir]
    run = run_training(recipe)
    assert falls(losses(run)), losses(run)
    assert _adapter_files(run.adapter_dir) == {"adapter_config.json", "adapter_model.safetensors"}
    assert json.loads((Path(run.adapter_dir) / "llm2vec_config.json").read_text()) == {"pooling_mode": "mean"}
    both = export_checkpoint(str(tiny["base"]), str(tmp_path / "both"), adapters=[mntp_run.adapter_dir, run.adapter_dir])
    only_mntp = export_checkpoint(str(tiny["base"]), str(tmp_path / "mntp"), adapters=[mntp_run.adapter_dir])
    texts = ["A function definition defines a user-defined function object.", "The quick brown fox."]
    vectors, before = _encode(both, texts), _encode(only_mntp, texts)
    assert vectors.shape == (2, 32) and torch.isfinite(vectors).all()
    assert not torch.allclose(vectors, before, atol=1e-4)  # the contrastive adapter changed the encoder


def test_simcse_dropout_reaches_attention(tiny):
    from llm2vec_hf.loading.models import load_bidirectional
    from llm2vec_hf.training.contrastive import set_attention_dropout

    model, tokenizer, _ = load_bidirectional(str(tiny["base"]))
    assert set_attention_dropout(model, 0.3) == 2
    batch = tokenizer(["Dropout is the only noise in SimCSE."], return_tensors="pt")
    model.train()
    first, second = model(**batch).last_hidden_state, model(**batch).last_hidden_state
    assert not torch.allclose(first, second)
    set_attention_dropout(model, 0.0)
    assert torch.allclose(model(**batch).last_hidden_state, model(**batch).last_hidden_state)


@pytest.mark.slow
def test_gradcache_loss_matches_plain_loss(tiny, tmp_path):
    plain = train("supervised", tiny, tmp_path / "plain", max_steps=2, lora_dropout=0.0)
    cached = train("supervised", tiny, tmp_path / "cached", max_steps=2, lora_dropout=0.0, use_gradcache=True,
                   gradcache_mini_batch_size=3)
    assert type(cached.trainer.loss).__name__ == "CachedMultipleNegativesRankingLoss"
    assert losses(plain) == pytest.approx(losses(cached), abs=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Gradient checkpointing with LoRA
# --------------------------------------------------------------------------------------------------------------
def test_gradient_checkpointing_with_lora_gives_the_same_gradients(tiny):
    from llm2vec_hf.loading.models import load_bidirectional
    from llm2vec_hf.training.arguments import ModelArguments
    from llm2vec_hf.training.lora import add_lora, enable_gradient_checkpointing

    grads = []
    for checkpointing in (False, True):
        model, tokenizer, _ = load_bidirectional(str(tiny["base"]), for_mntp=True)
        torch.manual_seed(0)
        peft_model = add_lora(model, ModelArguments("mntp", str(tiny["base"]), lora_r=4, lora_dropout=0.0))
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.1)  # non-zero B, so every LoRA weight gets a gradient
        if checkpointing:
            enable_gradient_checkpointing(peft_model)
            assert peft_model.base_model.model.model.gradient_checkpointing
        peft_model.train()
        batch = tokenizer(["Gradient checkpointing recomputes activations."] * 2, return_tensors="pt")
        peft_model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append({n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 2 * 7 * 2
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name
        assert grads[1][name].abs().sum() > 0, name


# --------------------------------------------------------------------------------------------------------------
# Kill and resume
# --------------------------------------------------------------------------------------------------------------
def test_resolve_resume_picks_the_newest_complete_checkpoint(tmp_path):
    from llm2vec_hf.training.checkpoints import resolve_resume

    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-9", ".staging/checkpoint-12"):
        (tmp_path / name).mkdir(parents=True)
    assert resolve_resume("true", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert resolve_resume(True, str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert resolve_resume("false", str(tmp_path)) is None
    assert resolve_resume(True, str(tmp_path / "empty")) is None
    with pytest.raises(LLM2VecError, match="no such checkpoint"):
        resolve_resume(str(tmp_path / "checkpoint-99"), str(tmp_path))


@pytest.mark.slow
def test_killed_run_resumes_and_reaches_max_steps(tiny, tmp_path):
    output = tmp_path / "run"
    values = recipe_values("simcse", tiny, output, max_steps=14, save_strategy="steps", save_steps=2,
                           save_total_limit=2, logging_steps=1)
    recipe = tmp_path / "simcse.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(values))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "llm2vec_hf.cli", "train", str(recipe)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not (output / "checkpoint-6").exists():
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-2000:]}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoints = sorted(p.name for p in output.glob("checkpoint-*"))
    assert checkpoints, "no checkpoint was written before the kill"
    for name in checkpoints:  # every visible checkpoint is complete
        assert {"adapter_model.safetensors", "trainer_state.json", "optimizer.pt", "rng_state.pth"} <= set(
            os.listdir(output / name)), name
    assert not (output / "adapter_model.safetensors").exists()

    resumed = run_training(parse_recipe(recipe, ["--resume_from_checkpoint", "true"]))
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 14
    first_resumed_step = int(sorted(checkpoints, key=lambda n: int(n.split("-")[1]))[-1].split("-")[1]) + 1
    assert len(losses(resumed)) == 14 - first_resumed_step + 1
    # Same data, same dropout noise (RNG states restored), same weights: the uninterrupted run's losses.
    uninterrupted = run_training(parse_recipe(recipe, ["--output_dir", str(tmp_path / "uninterrupted")]))
    assert losses(resumed) == pytest.approx(losses(uninterrupted)[first_resumed_step - 1:], abs=1e-6)
    assert _adapter_files(str(output)) == {"adapter_config.json", "adapter_model.safetensors"}
    assert (output / "loss_curve.png").is_file()


def test_mntp_reads_a_datasets_dataset(tiny, tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "train.txt").write_text(tiny["corpus"].read_text())
    run = train("mntp", tiny, tmp_path / "out", train_file=None, dataset_name=str(folder), max_steps=2,
                max_train_samples=200)
    assert len(losses(run)) == 2 and "eval_accuracy" in run.metrics  # the held-out part of the dataset was evaluated
    with pytest.raises(DataError, match="Could not load dataset"):
        train("mntp", tiny, tmp_path / "out2", train_file=None, dataset_name=str(tmp_path / "no-such-dataset"))


def test_mntp_evaluation_masks_are_the_same_every_time(tiny, tmp_path):
    run = train("mntp", tiny, tmp_path / "o", max_steps=1)
    first, second = run.trainer.evaluate(), run.trainer.evaluate()
    assert first["eval_loss"] == second["eval_loss"] and first["eval_accuracy"] == second["eval_accuracy"]


def test_supervised_columns_feed_instructions_as_pairs(tmp_path):
    from llm2vec_hf.training.data import read_supervised, supervised_columns

    lines = [{"query": "q1", "positive": "p1", "negative": ["n1", "m1"], "instruction": "Find it", "dataset": "a"},
             {"query": "q2", "positive": "p2", "negative": "n2", "dataset": "b"}]
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    columns, groups, n = supervised_columns(read_supervised(str(path)), None)
    assert n == 1 and groups == ["a", "b"] and list(columns) == ["query", "positive", "negative_1"]
    assert columns["query"] == [["Find it", "q1"], ["", "q2"]] and columns["positive"] == ["p1", "p2"]
    lines[1]["document_instruction"] = "Find the duplicate"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    columns, _, _ = supervised_columns(read_supervised(str(path)), None)
    assert columns["positive"] == [["", "p1"], ["Find the duplicate", "p2"]]
    assert columns["negative_1"] == [["", "n1"], ["Find the duplicate", "n2"]]


def test_instruction_is_read_but_not_pooled_in_training(tiny):
    """The training model pools a query's text tokens only, exactly as the exported checkpoint does."""
    from llm2vec_hf.loading.models import load_bidirectional
    from llm2vec_hf.modeling.encoding_settings import resolve_encoding
    from llm2vec_hf.modeling.input_formatting import tokenize_inputs
    from llm2vec_hf.training.contrastive import sentence_transformer_for

    encoder, tokenizer, folders = load_bidirectional(str(tiny["base"]))
    model = sentence_transformer_for(encoder, tokenizer, folders[0], max_seq_length=32, pooling_mode="mean")
    features = model.preprocess([["Find the paragraph", "def statements"]])
    expected = tokenize_inputs(tokenizer, [("Find the paragraph", "def statements")],
                               resolve_encoding(encoder.config, tokenizer, max_length=32))
    assert torch.equal(features["pool_mask"], expected["pool_mask"])
    n_text = len(tokenizer("def statements", add_special_tokens=False)["input_ids"])
    assert int(features["pool_mask"].sum()) == n_text < int(features["attention_mask"].sum())


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("stage", ["mntp", "supervised"])
@pytest.mark.slow
def test_interrupted_run_resumes_exactly(tiny, tmp_path, stage, monkeypatch):
    """Interrupted after step 6 (last checkpoint: 4), resumed: steps 5-8 repeat the uninterrupted run's losses."""
    from transformers import TrainerCallback

    from llm2vec_hf.training import run as run_module

    settings = dict(max_steps=8, save_strategy="steps", save_steps=4, max_train_samples=300)
    uninterrupted = train(stage, tiny, tmp_path / "a", **settings)

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise _Interrupt

    # patched where `train` looks it up (run.py imports the builders at its top)
    name = "build_mntp_trainer" if stage == "mntp" else "build_contrastive_trainer"
    build = getattr(run_module, name)

    def build_with_stop(recipe, resume):
        trainer, base = build(recipe, resume)
        trainer.add_callback(Stop())
        return trainer, base

    monkeypatch.setattr(run_module, name, build_with_stop)
    with pytest.raises(_Interrupt):
        train(stage, tiny, tmp_path / "b", **settings)
    monkeypatch.setattr(run_module, name, build)
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-4"]
    resumed = train(stage, tiny, tmp_path / "b", resume_from_checkpoint="true", **settings)
    assert losses(resumed) == pytest.approx(losses(uninterrupted)[4:], abs=1e-6)


def test_mntp_masks_depend_on_the_block_and_epoch_only():
    torch.manual_seed(0)
    ids = torch.randint(10, 100, (4, 64)).tolist()
    collate = _collator(mlm_probability=0.3, seed=5)
    first = collate([{"input_ids": row, "index": i} for i, row in enumerate(ids)])
    torch.manual_seed(123)  # the global RNG plays no part
    again = collate([{"input_ids": row, "index": i} for i, row in enumerate(ids)])
    assert all(torch.equal(first[k], again[k]) for k in first)
    next_epoch = collate([{"input_ids": row, "index": i + 4} for i, row in enumerate(ids)])
    assert not torch.equal(first["labels"], next_epoch["labels"])


@pytest.mark.parametrize("stage", ["mntp", "simcse", "supervised"])
@pytest.mark.slow
def test_gradient_checkpointing_trains_the_same(tiny, tmp_path, stage):
    """Through the trainers (including the sentence-transformers one): the same losses with and without gradient
    checkpointing, dropout included (checkpointing replays the RNG state when it recomputes)."""
    runs = [train(stage, tiny, tmp_path / str(flag), max_steps=3, max_train_samples=200, gradient_checkpointing=flag)
            for flag in (False, True)]
    model = runs[1].trainer.model
    encoder = model[0].auto_model if stage != "mntp" else model
    assert encoder.base_model.model.is_gradient_checkpointing if stage != "mntp" else \
        encoder.base_model.model.model.gradient_checkpointing
    assert losses(runs[0]) == pytest.approx(losses(runs[1]), abs=1e-6)


def test_bf16_training_with_bfloat16_weights(tiny, tmp_path):
    """The GPU recipes' setting (bf16 autocast, bfloat16 base weights) runs; LoRA weights stay float32."""
    from safetensors.torch import load_file

    run = train("supervised", tiny, tmp_path / "o", max_steps=2, bf16=True, dtype="bfloat16")
    assert len(losses(run)) == 2 and all(map(lambda x: x == x and abs(x) < 1e4, losses(run)))
    weights = load_file(str(tmp_path / "o" / "adapter_model.safetensors"))
    assert weights and {w.dtype for w in weights.values()} == {torch.float32}


def test_loss_curve_without_matplotlib_is_skipped_with_a_hint(tmp_path, monkeypatch, caplog):
    """matplotlib is optional ([train]): without it the run gets no PNG and one log line, not an error."""
    import sys

    from llm2vec_hf.training.reporting import write_loss_curve

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    path = tmp_path / "curve.png"
    with caplog.at_level("INFO", logger="llm2vec_hf.training.reporting"):
        assert write_loss_curve([{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}], str(path)) is None
    assert not path.exists()
    assert "llm2vec-hf[train]" in caplog.text


def test_rotation_killed_midway_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    """A kill while an old checkpoint is being deleted must not leave a checkpoint-N that looks resumable."""
    from llm2vec_hf.training import checkpoints

    for step in (1, 2, 3):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in ("adapter_model.safetensors", "trainer_state.json", "optimizer.pt", "rng_state.pth"):
            (folder / name).write_text("x")

    def killed_during_delete(path, *args, **kwargs):
        os.remove(os.path.join(path, "adapter_model.safetensors"))
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed_during_delete)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.rotate_checkpoints(str(tmp_path), 2)
    for path in checkpoints.list_checkpoints(str(tmp_path)):
        assert "adapter_model.safetensors" in os.listdir(path), path
    monkeypatch.undo()
    checkpoints.check_output_dir(str(tmp_path), resuming=True)  # cleans the leftover
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2", "checkpoint-3"]


# --------------------------------------------------------------------------------------------------------------
# E5 data: the converter against the official loader's texts (tests/fixtures/official_training)
# --------------------------------------------------------------------------------------------------------------
OFFICIAL_TRAINING = REPO / "tests" / "fixtures" / "official_training"


def test_e5_converter_gives_the_official_instructions(tmp_path):
    from llm2vec_hf.training.data import read_supervised
    from llm2vec_hf.training.e5 import E5_INSTRUCTIONS, convert

    counts = convert(str(OFFICIAL_TRAINING / "echo-data"), str(tmp_path / "train.jsonl"))
    assert len(counts) == len(E5_INSTRUCTIONS) == 14
    records = read_supervised(str(tmp_path / "train.jsonl"))
    allnli = [r.instruction for r in records if r.dataset == "allnli"]
    assert allnli == ["Given a premise, retrieve a hypothesis that is entailed by the premise; ",
                      "Retrieve semantically similar text; "] * 2 + [
                      "Given a premise, retrieve a hypothesis that is entailed by the premise; "]
    quora = {r.instruction for r in records if r.dataset == "quora_duplicates"}
    assert quora == {"Given a question, retrieve questions that are semantically equivalent to the given question; ",
                     "Find questions that have the same meaning as the input question; "}
    assert all(not r.document_instruction for r in records)
    # Every text the official E5 loader trains on (instruction + "; " + marker + query; documents bare) is ours.
    official = json.loads((OFFICIAL_TRAINING / "official.json").read_text())["runs"]["supervised/Sheared-Llama"]
    ours = {(f"{r.instruction}!@#$%^&*(){r.query}", f"!@#$%^&*(){r.positive}", f"!@#$%^&*(){r.negatives[0]}")
            for r in records}
    assert {tuple(texts) for texts in official["all_texts"]} <= ours
    assert len(official["all_texts"]) == sum(n // 2 * 2 for n in counts.values())  # full batches of 2 kept


def test_e5_converter_refuses_an_incomplete_mix(tmp_path):
    import shutil

    from llm2vec_hf.commands.e5 import main

    folder = Path(shutil.copytree(OFFICIAL_TRAINING / "echo-data", tmp_path / "echo"))
    (folder / "squad.jsonl").unlink()
    assert main([str(folder), str(tmp_path / "out.jsonl")]) == 2
    assert not (tmp_path / "out.jsonl").exists()
    assert main([str(folder), str(tmp_path / "out.jsonl"), "--datasets", "allnli", "nq"]) == 0
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 7


def test_simcse_keeps_its_last_smaller_batch_at_the_end_of_the_epoch():
    """As the official Trainer's default sampler: the epoch length (hence the schedule) counts the smaller batch."""
    kept = GroupedBatchSampler(["simcse"] * 10, 4, 1, seed=3, drop_last=False)
    dropped = GroupedBatchSampler(["simcse"] * 10, 4, 1, seed=3)
    batches = list(kept)
    assert len(kept) == len(batches) == 3 and [len(b) for b in batches] == [4, 4, 2]
    assert batches[:2] == list(dropped) and sorted(i for b in batches for i in b) == list(range(10))
    assert len(GroupedBatchSampler(["simcse"] * 10, 4, 2, seed=3, drop_last=False)) == 2  # across devices: dropped


def test_training_wraps_texts_only_in_the_recipes_template(tiny):
    """The reference's by-name chat template is an inference rule: run_simcse.py never wraps and run_supervised.py
    wraps by its own list, so a base named like an official one is not wrapped in training unless the recipe says so."""
    from llm2vec_hf.loading.models import load_bidirectional
    from llm2vec_hf.modeling.encoding_settings import REFERENCE_TEMPLATES
    from llm2vec_hf.training.contrastive import sentence_transformer_for

    encoder, tokenizer, folders = load_bidirectional(str(tiny["base"]))
    name = "mistralai/Mistral-7B-Instruct-v0.2"
    assert name in REFERENCE_TEMPLATES
    encoder.config._name_or_path = name
    plain = sentence_transformer_for(encoder, tokenizer, folders[0], max_seq_length=32, pooling_mode="mean")
    ids = plain.preprocess(["def statements"])["input_ids"][0].tolist()
    assert "INST" not in tokenizer.decode(ids)
    wrapped = sentence_transformer_for(encoder, tokenizer, folders[0], max_seq_length=32, pooling_mode="mean",
                                       text_template="[INST] {text} [/INST]")
    assert "INST" in tokenizer.decode(wrapped.preprocess(["def statements"])["input_ids"][0].tolist())


def test_each_stage_trains_with_a_module_level_trainer(tiny, tmp_path):
    """The trainers and the preloaded sentence-transformers module are importable classes, and the adapter the
    trainer saves is the one inside the model it trains."""
    from llm2vec_hf.training import contrastive, mntp

    for stage, module, trainer_class in (("mntp", mntp, mntp.MNTPTrainer),
                                         ("supervised", contrastive, contrastive.ContrastiveTrainer)):
        build = mntp.build_mntp_trainer if stage == "mntp" else contrastive.build_contrastive_trainer
        trainer, _ = build(parse_recipe(recipe_values(stage, tiny, tmp_path / stage)), None)
        assert type(trainer) is trainer_class
        if stage == "supervised":
            assert type(trainer.model[0]) is contrastive.PreloadedLLM2VecTransformer
            assert trainer.peft_model() is trainer.model[0].auto_model
        else:
            assert trainer.peft_model() is trainer.model
