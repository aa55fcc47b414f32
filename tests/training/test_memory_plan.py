"""The memory plan of ``train --print-config`` (llm2vec_hf.training.memory_plan) against real models and real steps.

The parameter counts are checked against the models transformers and peft build; the activation estimate against
the peak that torch's profiler measures during a real training step (the Trainer's own ``training_step``) of a
tiny model whose texts all fill ``max_seq_length``; the verdicts against every shipped recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm2vec_hf.loading.json_files import write_jsonl
from llm2vec_hf.training.tiny_model import build_tiny_decoder, english_corpus
from llm2vec_hf.training import parse_recipe
from llm2vec_hf.training.memory_plan import GPU_SIZES_GB, base_config, plan

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name != "accelerate")

pytestmark = pytest.mark.usefixtures("one_thread")

#: Small mixture-of-experts settings (as tests/modeling/test_conformance.py).
SMALL_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "decoder_sparse_step": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A base (4 layers, hidden 64, MLP 176) and data whose every text is longer than the recipes' 32 tokens."""
    folder = tmp_path_factory.mktemp("plan")
    paragraphs = list(english_corpus())
    texts = [" ".join(paragraphs[i:i + 3]) for i in range(0, 3 * 48, 3)]
    (folder / "corpus.txt").write_text("\n".join(texts) + "\n")
    write_jsonl(folder / "supervised.jsonl", [
        {"query": text, "positive": texts[(i + 1) % len(texts)], "negative": texts[(i + 2) % len(texts)],
         "instruction": "Retrieve the paragraph", "dataset": "one"} for i, text in enumerate(texts)])
    base = build_tiny_decoder(folder / "base", "llama", hidden_size=64, num_layers=4, intermediate_size=176)
    return {"base": base, "corpus": folder / "corpus.txt", "supervised": folder / "supervised.jsonl",
            "root": folder}


def tiny_recipe(data, stage: str, **values):
    settings = {
        "stage": stage, "model_name_or_path": str(data["base"]), "max_seq_length": 32, "lora_r": 4,
        "train_file": str(data["supervised" if stage == "supervised" else "corpus"]),
        "output_dir": str(data["root"] / f"out-{stage}"), "per_device_train_batch_size": 8, "max_steps": 1,
        "save_strategy": "no", "report_to": "none", "use_cpu": True, "bf16": True, "dtype": "bfloat16",
        "disable_tqdm": True, **values,
    }
    return parse_recipe(settings)


def measured_peak_bytes(step) -> int:
    """The most bytes live at once above the start of ``step()``, from the profiler's allocation records."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    records = sorted((event.start_ns(), event.nbytes()) for event in profiler.profiler.kineto_results.events()
                     if event.name() == "[memory]")
    live = peak = 0
    for _, change in records:
        live += change
        peak = max(peak, live)
    return peak


def trainer_for(recipe):
    if recipe.model.stage == "mntp":
        from llm2vec_hf.training.mntp import build_mntp_trainer

        return build_mntp_trainer(recipe, None)[0]
    from llm2vec_hf.training.contrastive import build_contrastive_trainer

    return build_contrastive_trainer(recipe, None)[0]


@pytest.mark.parametrize("stage, values", [
    ("mntp", {"gradient_checkpointing": False}),
    ("mntp", {"gradient_checkpointing": True}),
    ("simcse", {"gradient_checkpointing": False}),
    ("supervised", {"gradient_checkpointing": False}),
    ("supervised", {"gradient_checkpointing": True, "use_gradcache": True, "gradcache_mini_batch_size": 4}),
    ("supervised", {"gradient_checkpointing": True, "max_batch_tokens": 100}),
], ids=["mntp", "mntp-checkpointing", "simcse", "supervised", "supervised-gradcache-checkpointing",
        "supervised-checkpointing-small-calls"])
@pytest.mark.slow
def test_activation_estimate_is_within_25_percent_of_a_measured_step(data, stage, values):
    recipe = tiny_recipe(data, stage, **values)
    estimate = plan(recipe, device="cpu")["bytes"]["activations"]
    trainer = trainer_for(recipe)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, which this test does not run
    trainer.training_step(trainer.model, batch)  # the LoRA gradients exist from here on, as in every later step
    measured = measured_peak_bytes(lambda: trainer.training_step(trainer.model, batch))
    assert 0.75 <= estimate / measured <= 1.25, (estimate, measured)


def test_gradcache_and_checkpointing_lower_the_estimate_as_they_lower_the_measured_peak(data):
    plain = plan(tiny_recipe(data, "supervised", gradient_checkpointing=False), device="cpu")["bytes"]
    cached = plan(tiny_recipe(data, "supervised", gradient_checkpointing=False, use_gradcache=True,
                              gradcache_mini_batch_size=4), device="cpu")["bytes"]
    assert plain["activations_with_gradient_checkpointing"] < plain["activations_without_gradient_checkpointing"]
    assert cached["activations"] * 4 < plain["activations"]  # 4 of 24 texts at a time
    assert cached["weights"] == plain["weights"] and cached["lora_parameters_gradients_adamw"] == plain[
        "lora_parameters_gradients_adamw"]


@pytest.mark.parametrize("family, overrides", [("llama", {}), ("qwen3_moe", SMALL_MOE)])
def test_parameter_counts_are_those_of_the_models_transformers_and_peft_build(tmp_path, family, overrides):
    from types import SimpleNamespace

    from llm2vec_hf.loading.models import load_bidirectional
    from llm2vec_hf.training.lora import add_lora
    from llm2vec_hf.training.memory_plan import model_shape

    base = build_tiny_decoder(tmp_path / family, family, **overrides)
    config, source = base_config(str(base))
    assert source == str(base / "config.json")
    lora = SimpleNamespace(lora_r=4, lora_alpha=None, lora_dropout=None, lora_target_modules=None,
                           lora_target_parameters=None)
    for for_mntp in (False, True):
        shape = model_shape(config, lora, for_mntp=for_mntp)
        model, _, _ = load_bidirectional(str(base), for_mntp=for_mntp)
        assert shape.parameters == sum(p.numel() for p in model.parameters())
    encoder, _, _ = load_bidirectional(str(base))
    trainable, _ = add_lora(encoder, lora).get_nb_trainable_parameters()
    assert model_shape(config, lora, for_mntp=False).lora_parameters == trainable


def test_the_named_knob_makes_the_step_fit(data):
    """A tiny base at batch sizes no GPU holds: the plan names the fields that fit each GPU, and with them set the
    plan fits (MNTP: a smaller per-device batch; contrastive: GradCache's mini-batch)."""
    for stage, batch in (("mntp", 400000), ("supervised", 60000)):
        recipe = tiny_recipe(data, stage, per_device_train_batch_size=batch, gradient_checkpointing=False)
        result = plan(recipe)
        assert not result["fits"]["24 GB"]
        for size in GPU_SIZES_GB:
            knob = result["to_fit"][f"{size} GB"]
            assert knob["set"], knob
            fixed = plan(tiny_recipe(data, stage, **{"per_device_train_batch_size": batch,
                                                     "gradient_checkpointing": False, **knob["set"]}))
            assert fixed["fits"][f"{size} GB"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO).as_posix())
@pytest.mark.slow
def test_every_shipped_recipe_fits_an_80_gb_gpu_or_says_why(path):
    recipe = parse_recipe(path, [] if torch.cuda.is_available() else ["--use_cpu", "true"])
    result = plan(recipe)
    assert result["config_from"]  # a shipped base is planned without a download
    assert result["fits"]["80 GB"] or "# memory plan" in path.read_text(), (result["total_gib"], result["to_fit"])


@pytest.mark.slow
def test_print_config_prints_the_plan_or_why_not(data, tmp_path):
    import subprocess
    import sys

    def printed(base: str) -> dict:
        run = subprocess.run([sys.executable, "-m", "llm2vec_hf.cli", "train", str(REPO / "configs" / "simcse" /
                                                                                    "qwen3-0.6b.yaml"),
                              "--model_name_or_path", base, "--use_cpu", "true", "--print-config"],
                             capture_output=True, text=True, check=True)
        return json.loads(run.stdout)["memory_plan"]

    known = printed(str(data["base"]))
    assert known["bytes"]["total"] == sum(v for k, v in known["bytes"].items() if k in (
        "weights", "lora_parameters_gradients_adamw", "activations", "framework"))
    assert set(known["fits"]) == {f"{size} GB" for size in GPU_SIZES_GB}
    missing = printed(str(tmp_path / "no-such-base"))
    assert "no-such-base" in missing["unavailable"]
