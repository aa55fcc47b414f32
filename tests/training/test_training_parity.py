"""Training parity with the official LLM2Vec scripts, and tests that fail when a recipe setting is dropped.

tests/fixtures/official_training/official.json was recorded by scripts/make_training_fixtures.py, which ran the
official experiments/run_mntp.py, run_simcse.py and run_supervised.py (llm2vec 0.2.3, transformers 4.44) on the
tiny model in model/ (a SentencePiece-style vocabulary with non-default special tokens), dropout off. Here the
project's real recipes (configs/) run on the same model and data, with only the model, the data, the sizes and
the stop step overridden, and must give the same blocks, batches, step-0 losses and learning rates.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llm2vec_hf.training import parse_recipe, run_training

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
FIXTURES = REPO / "tests" / "fixtures" / "official_training"
OFFICIAL = json.loads((FIXTURES / "official.json").read_text())
MODEL = FIXTURES / "model"
STOP = 5

#: our recipe -> the official recipe file it reproduces (bases the official repository has no file for follow
#: the stage's Llama-2 file, whose schedule every official file of the stage shares).
OFFICIAL_NAME = {"sheared-llama-1.3b": "Sheared-Llama", "llama-2-7b-chat": "Llama2",
                 "mistral-7b-instruct-v0.2": "Mistral",
                 "meta-llama-3-8b-instruct": "MetaLlama3", "meta-llama-3.1-8b-instruct": "MetaLlama3.1",
                 "qwen2.5-7b-instruct": "Llama2", "gemma-2-9b-it": "Llama2"}


pytestmark = pytest.mark.usefixtures("one_thread")


def recipe_for(stage: str, name: str, tmp_path: Path, **values):
    """Our real recipe, on the fixture model and data, at the official runs' sizes, dropout off."""
    data = {"mntp": FIXTURES / "corpus.txt", "simcse": FIXTURES / "wiki.txt",
            "supervised": tmp_path / "train.jsonl"}[stage]
    tmp_path.mkdir(parents=True, exist_ok=True)
    if stage == "supervised" and not data.exists():
        from llm2vec_hf.training.e5 import convert

        convert(str(FIXTURES / "echo-data"), str(data))
    settings = {
        "model_name_or_path": str(MODEL), "peft_model_name_or_path": None, "train_file": str(data),
        "dataset_name": None, "dataset_config_name": None, "output_dir": str(tmp_path / "out"),
        "max_seq_length": {"mntp": 16, "simcse": 48, "supervised": 48}[stage],
        "per_device_train_batch_size": {"mntp": 4, "simcse": 4, "supervised": 2}[stage],
        "stop_after_n_steps": STOP, "eval_strategy": "no", "save_strategy": "no", "report_to": "none",
        "use_cpu": True, "bf16": False, "dtype": "float32", "attn_implementation": "eager",
        "gradient_checkpointing": False, "lora_dropout": 0.0, "logging_steps": 1, "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if stage == "simcse":
        settings["simcse_dropout"] = 0.0
    settings.update(values)
    return parse_recipe(CONFIGS / stage / f"{name}.yaml", **settings)


def learning_rates_of(recipe, monkeypatch) -> tuple[list[float], object]:
    """Trains the recipe; returns the learning rate of every optimizer step and the result."""
    import transformers

    rates = []
    original = transformers.Trainer.training_step

    def training_step(self, *args, **kwargs):
        rates.append(self.lr_scheduler.get_last_lr()[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", training_step)
    return rates, run_training(recipe)


# --------------------------------------------------------------------------------------------------------------
# Learning-rate schedule: every real recipe, at the real corpora's size, step by step up to the stop
# --------------------------------------------------------------------------------------------------------------
REAL = sorted(p for stage in ("mntp", "simcse", "supervised") for p in (CONFIGS / stage).glob("*.yaml"))


@pytest.mark.parametrize("path", REAL, ids=lambda p: f"{p.parent.name}/{p.stem}")
@pytest.mark.slow
def test_recipe_schedule_is_the_official_one_at_every_step(path):
    from llm2vec_hf.training.schedule import learning_rates, resolve_schedule

    stage = path.parent.name
    # Bases the official runs never trained (the zoo's recipes) follow the paper's shared schedule, which the
    # official scripts give every base they do not name.
    official = OFFICIAL["real_schedules"].get(f"{stage}/{OFFICIAL_NAME.get(path.stem)}") \
        or OFFICIAL["real_schedules"][f"{stage}/Llama2"]
    recipe = parse_recipe(path, use_cpu=True, bf16=False)
    schedule = resolve_schedule(recipe, official["steps_per_epoch"], "official fixture")
    assert schedule["stop_step"] == official["stop_after_n_steps"] == 1000
    assert schedule["num_training_steps"] == math.ceil(official["num_train_epochs"] * official["steps_per_epoch"])
    ours = learning_rates(recipe, schedule["num_training_steps"], schedule["stop_step"])
    official_rates = OFFICIAL["curves"][official["curve"]]
    assert len(ours) == len(official_rates)
    assert ours == pytest.approx(official_rates, rel=1e-9, abs=1e-15)
    # still close to its peak at the stop, as the official runs are
    assert 0.9 < schedule["learning_rate_at_stop_over_peak"] < 0.97


def test_print_config_shows_the_resolved_schedule_without_loading_a_model(tmp_path, capsys, monkeypatch):
    from transformers import PreTrainedModel

    from llm2vec_hf import cli

    # every model load, through whichever module, ends in PreTrainedModel.from_pretrained
    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("loaded a model")))
    jsonl = tmp_path / "train.jsonl"
    from llm2vec_hf.training.e5 import convert

    counts = convert(str(FIXTURES / "echo-data"), str(jsonl))
    assert cli.main(["train", str(CONFIGS / "supervised" / "mistral-7b-instruct-v0.2.yaml"),
                     "--train_file", str(jsonl),
                     "--per_device_train_batch_size", "2", "--use_cpu", "true", "--bf16", "false",
                     "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["contrastive"]["text_template"] == "[INST] {text} [/INST]"
    assert printed["training"]["per_device_train_batch_size"] == 2 and printed["data"]["train_file"] == str(jsonl)
    schedule = printed["lr_schedule"]
    steps = sum(n // 2 for n in counts.values())  # full batches of 2 per dataset, as E5Data batches
    resolved = (schedule["lr_scheduler_type"], schedule["warmup_steps"], schedule["stop_after_n_steps"])
    assert resolved == ("linear", 300, 1000)
    assert (schedule["steps_per_epoch"], schedule["num_training_steps"]) == (steps, 3 * steps)
    assert schedule["stop_step"] == min(1000, 3 * steps)  # a data set this small ends before the stop step


def test_print_config_says_when_the_decay_length_cannot_be_known(capsys):
    from llm2vec_hf import cli

    assert cli.main(["train", str(CONFIGS / "simcse" / "llama-2-7b-chat.yaml"), "--print-config", "--use_cpu", "true",
                     "--bf16", "false"]) == 0
    schedule = json.loads(capsys.readouterr().out)["lr_schedule"]
    assert schedule["num_training_steps"] is None and schedule["num_training_steps_from"].startswith("unknown")
    assert schedule["stop_step"] == 1000 and schedule["warmup_steps"] == 0


# --------------------------------------------------------------------------------------------------------------
# MNTP
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["llama-2-7b-chat", "mistral-7b-instruct-v0.2"])
def mntp(request, tmp_path_factory):
    from llm2vec_hf.training.mntp import build_mntp_trainer

    name = request.param
    official = OFFICIAL["runs"][f"mntp/{OFFICIAL_NAME[name]}"]
    recipe = recipe_for("mntp", name, tmp_path_factory.mktemp("mntp"))
    trainer, _ = build_mntp_trainer(recipe, None)
    return name, official, recipe, trainer


def test_mntp_recipe_settings_are_the_official_ones(mntp):
    _, official, recipe, trainer = mntp
    config = official["config"]
    assert (recipe.mntp.mask_token_type, recipe.mntp.data_collator_type, recipe.mntp.mlm_probability) == (
        config["mask_token_type"], config["data_collator_type"], config["mlm_probability"])
    collator = trainer.data_collator
    assert collator.mlm_probability == config["mlm_probability"]
    assert collator.all_mask == (config["data_collator_type"] == "all_mask")


def test_mntp_blank_mask_is_the_vocabulary_underscore(mntp):
    _, official, _, trainer = mntp
    tokenizer = trainer.processing_class
    assert trainer.data_collator.mask_id == official["mask_token_id"] == tokenizer.convert_tokens_to_ids("_")
    assert tokenizer("_", add_special_tokens=False)["input_ids"] != [official["mask_token_id"]]  # "▁_"


def test_mntp_blocks_are_the_official_grouped_corpus(mntp):
    _, official, _, trainer = mntp
    dataset = trainer.train_dataset
    assert dataset.blocks.tolist() == official["blocks"]
    assert dataset.special_tokens_mask.astype(int).tolist() == official["special_tokens_mask"]


def test_mntp_batch_with_the_official_mask_positions_is_the_official_batch(mntp, monkeypatch):
    _, official, _, trainer = mntp
    batch = official["batch0"]
    original = torch.tensor([f["input_ids"] for f in batch["features"]])
    inputs, labels = torch.tensor(batch["input_ids"]), torch.tensor(batch["labels"])
    collator = trainer.data_collator
    selected = labels != -100
    masked = selected & (inputs == collator.mask_id)
    randomised = selected & ~masked & (inputs != original)
    # Draws that reproduce the official choices: selection, mask/keep, random/keep, and the random tokens.
    uniforms = torch.stack([(~selected).float(), (~masked).float(), (~randomised).float()])
    monkeypatch.setattr(collator, "masking_draws", lambda shape, indices: (uniforms, inputs.clone(), torch.zeros(shape[0])))
    ours = collator([{"input_ids": f["input_ids"], "special_tokens_mask": f["special_tokens_mask"]}
                     for f in batch["features"]])
    assert torch.equal(ours["input_ids"], inputs)
    assert torch.equal(ours["labels"], labels)
    assert torch.equal(ours["attention_mask"], torch.tensor(batch["attention_mask"]))


def test_mntp_loss_at_step_0_is_the_official_loss(mntp):
    _, official, _, trainer = mntp
    batch = {k: torch.tensor(official["batch0"][k]) for k in ("input_ids", "attention_mask", "labels")}
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert float(loss) == pytest.approx(official["loss0"], abs=1e-4)


@pytest.mark.parametrize("name", ["llama-2-7b-chat", "mistral-7b-instruct-v0.2"])
@pytest.mark.slow
def test_mntp_learning_rate_and_stop_are_the_official_ones(name, tmp_path, monkeypatch):
    official = OFFICIAL["runs"][f"mntp/{OFFICIAL_NAME[name]}"]
    rates, result = learning_rates_of(recipe_for("mntp", name, tmp_path), monkeypatch)
    assert rates == pytest.approx(official["learning_rates"], rel=1e-9)
    assert result.trainer.state.global_step == STOP


# --------------------------------------------------------------------------------------------------------------
# SimCSE
# --------------------------------------------------------------------------------------------------------------
def contrastive_trainer(stage, name, tmp_path, **values):
    from llm2vec_hf.training.contrastive import build_contrastive_trainer

    recipe = recipe_for(stage, name, tmp_path, **values)
    trainer, _ = build_contrastive_trainer(recipe, None)
    return recipe, trainer


def loss_on(trainer, columns: list[list]) -> float:
    model = trainer.model
    model.train()
    features = [model[0].preprocess(list(column)) for column in columns]
    return float(trainer.loss(features, None))


def unpadded_rows(features) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(features["input_ids"], features["attention_mask"])]


def test_simcse_padded_row_pooling_reproduces_the_official_batch_and_loss(tmp_path):
    official = OFFICIAL["runs"]["simcse/Llama2"]
    recipe, trainer = contrastive_trainer("simcse", "llama-2-7b-chat", tmp_path, simcse_pooling="padded_row")
    assert recipe.contrastive.loss_scale == official["config"]["loss_scale"]
    texts = [t[0] for t in official["texts"]]
    features = trainer.model[0].preprocess(texts)
    batch = official["batch0"][0]
    assert features["input_ids"].tolist() == batch["input_ids"]  # left-padded with EOS, as the official
    assert features["attention_mask"].tolist() == batch["attention_mask"]
    assert features["pool_mask"].sum().item() == features["pool_mask"].numel()  # the whole padded row
    # Without dropout the loss is -log(p) with p within 1e-4 of 1: float32 resolves it to a few 1e-8. Token-only
    # pooling (the default) gives 1.6e-4 here.
    assert loss_on(trainer, [texts, texts]) == pytest.approx(official["loss0"], abs=5e-7)


def test_simcse_default_pools_the_text_tokens_only(tmp_path):
    official = OFFICIAL["runs"]["simcse/Llama2"]
    _, trainer = contrastive_trainer("simcse", "llama-2-7b-chat", tmp_path)
    texts = [t[0] for t in official["texts"]]
    features = trainer.model[0].preprocess(texts)
    assert unpadded_rows(features) == unpadded_rows({k: torch.tensor(v) for k, v in official["batch0"][0].items()})
    tokenizer = trainer.model[0].tokenizer
    text_tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert features["pool_mask"].sum(1).tolist() == text_tokens  # BOS and padding not pooled
    assert loss_on(trainer, [texts, texts]) != pytest.approx(official["loss0"], abs=5e-6)  # the documented difference


def test_loss_scale_reaches_the_loss(tmp_path):
    """The contrastive loss is cross-entropy over loss_scale x cosine similarity: checked at two scales."""
    official = OFFICIAL["runs"]["supervised/Sheared-Llama"]
    losses = {}
    for scale in (50.0, 7.0):
        _, trainer = contrastive_trainer("supervised", "sheared-llama-1.3b", tmp_path / str(scale), loss_scale=scale)
        model = trainer.model
        columns = [[t[i].split("!@#$%^&*()")[1] for t in official["texts"]] for i in range(3)]
        torch.manual_seed(0)
        embeddings = [model(model[0].preprocess(c))["sentence_embedding"] for c in columns]
        scores = torch.nn.functional.cosine_similarity(embeddings[0][:, None], torch.cat(embeddings[1:])[None], dim=-1)
        expected = torch.nn.functional.cross_entropy(scale * scores, torch.arange(len(columns[0])))
        losses[scale] = loss_on(trainer, columns)
        assert losses[scale] == pytest.approx(float(expected), rel=1e-4)
    assert losses[50.0] != pytest.approx(losses[7.0], rel=1e-2)


@pytest.mark.parametrize("dropout", [0.3, 0.0])
def test_simcse_dropout_of_the_recipe_reaches_the_trained_model(tmp_path, dropout):
    _, trainer = contrastive_trainer("simcse", "llama-2-7b-chat", tmp_path, simcse_dropout=dropout)
    model = trainer.model
    rates = {m.attention_dropout for m in model.modules() if hasattr(m, "attention_dropout")
             and not isinstance(m.attention_dropout, bool)}
    assert rates == {dropout}
    model.train()
    features = model[0].preprocess(["Dropout is the only noise in SimCSE."])
    first = model(dict(features))["sentence_embedding"]
    second = model(dict(model[0].preprocess(["Dropout is the only noise in SimCSE."])))["sentence_embedding"]
    assert torch.allclose(first, second) == (dropout == 0.0)


def test_simcse_learning_rate_and_stop_are_the_official_ones(tmp_path, monkeypatch):
    official = OFFICIAL["runs"]["simcse/Llama2"]
    rates, result = learning_rates_of(recipe_for("simcse", "llama-2-7b-chat", tmp_path), monkeypatch)
    assert rates == pytest.approx(official["learning_rates"], rel=1e-9)
    assert result.trainer.state.global_step == STOP


# --------------------------------------------------------------------------------------------------------------
# Supervised: E5 data, chat templates
# --------------------------------------------------------------------------------------------------------------
SUPERVISED = [("mistral-7b-instruct-v0.2", "Mistral"), ("meta-llama-3-8b-instruct", "MetaLlama3"),
              ("sheared-llama-1.3b", "Sheared-Llama")]


def our_columns(texts: list[list[str]], tmp_path: Path) -> list[list]:
    """Our converted E5 records for the official batch: query as [instruction, text], documents plain."""
    from llm2vec_hf.training.data import read_supervised

    recipe_for("supervised", "sheared-llama-1.3b", tmp_path)  # converts the echo-data fixture
    by_query = {r.query: r for r in read_supervised(str(tmp_path / "train.jsonl"))}
    records = [by_query[t[0].split("!@#$%^&*()")[1]] for t in texts]
    return [[[r.instruction, r.query] for r in records], [r.positive for r in records],
            [r.negatives[0] for r in records]]


@pytest.mark.parametrize("name,official_name", SUPERVISED)
def test_supervised_batch_and_loss_are_the_official_ones(name, official_name, tmp_path):
    official = OFFICIAL["runs"][f"supervised/{official_name}"]
    _, trainer = contrastive_trainer("supervised", name, tmp_path)
    columns = our_columns(official["texts"], tmp_path)
    for column, batch in zip(columns, official["batch0"]):
        features = trainer.model[0].preprocess(column)
        official_features = {k: torch.tensor(v) for k, v in batch.items()}
        assert unpadded_rows(features) == unpadded_rows(official_features)
        assert features["pool_mask"].sum(1).tolist() == official_features["embed_mask"].sum(1).tolist()
    assert loss_on(trainer, columns) == pytest.approx(official["loss0"], abs=1e-4)


def test_supervised_learning_rate_and_stop_are_the_official_ones(tmp_path, monkeypatch):
    official = OFFICIAL["runs"]["supervised/Mistral"]
    rates, result = learning_rates_of(recipe_for("supervised", "mistral-7b-instruct-v0.2", tmp_path), monkeypatch)
    assert rates == pytest.approx(official["learning_rates"], rel=1e-9, abs=1e-15)
    assert result.trainer.state.global_step == STOP
    # The template trained with is stored with the adapter and carried into the exported checkpoint.
    from llm2vec_hf.checkpoint.export import export_checkpoint

    stored = json.loads((Path(result.adapter_dir) / "config.json").read_text())["llm2vec"]
    assert stored["text_template"] == "[INST] {text} [/INST]"
    # max_length: the fixture has 256 positions (the default 512 is refused for it)
    exported = export_checkpoint(str(MODEL), str(tmp_path / "exported"), [result.adapter_dir], max_length=256)
    config = json.loads((Path(exported) / "config.json").read_text())
    assert config["llm2vec"]["text_template"] == "[INST] {text} [/INST]"


@pytest.mark.parametrize("mask_token_type", ["eos", "mask"])
def test_mntp_mask_type_of_the_recipe_reaches_the_collator(mask_token_type, tmp_path):
    from llm2vec_hf.training.mntp import build_mntp_trainer

    recipe = recipe_for("mntp", "llama-2-7b-chat", tmp_path, mask_token_type=mask_token_type)
    trainer, _ = build_mntp_trainer(recipe, None)
    tokenizer = trainer.processing_class
    expected = tokenizer.eos_token_id if mask_token_type == "eos" else tokenizer.convert_tokens_to_ids("<mask>")
    assert trainer.data_collator.mask_id == expected != OFFICIAL["runs"]["mntp/Llama2"]["mask_token_id"]


def test_mntp_shuffles_every_block_however_short_the_run(tmp_path):
    from llm2vec_hf.training.mntp import build_mntp_trainer

    recipe = recipe_for("mntp", "llama-2-7b-chat", tmp_path, max_steps=2)
    trainer, _ = build_mntp_trainer(recipe, None)
    assert len(trainer.train_dataset) == len(OFFICIAL["runs"]["mntp/Llama2"]["blocks"])
    sampler = trainer._get_train_sampler()
    assert sorted(sampler) == list(range(len(trainer.train_dataset)))


def test_mntp_groups_1000_texts_at_a_time_as_the_official_map():
    """The official group_texts runs under datasets.map(batched=True): 1,000 texts per call, each call's
    remainder dropped, so the block after each call starts at a text boundary (here: a BOS)."""
    from transformers import AutoTokenizer

    from llm2vec_hf.training.mntp import tokenize_into_blocks

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    texts = ["The river flows.", "", " = Title = "] * 500  # 1,500 texts: two groups
    ids = [tokenizer(t)["input_ids"] for t in texts]
    blocks, special = tokenize_into_blocks(tokenizer, texts, 7)
    first = [i for row in ids[:1000] for i in row]
    second = [i for row in ids[1000:] for i in row]
    expected = [first[i:i + 7] for i in range(0, len(first) // 7 * 7, 7)]
    expected += [second[i:i + 7] for i in range(0, len(second) // 7 * 7, 7)]
    assert blocks.tolist() == expected
    assert blocks[len(first) // 7][0] == tokenizer.bos_token_id and len(first) % 7  # a remainder was dropped
    assert special[:, 0].tolist() == [b == tokenizer.bos_token_id for b in blocks[:, 0].tolist()]


def test_print_config_counts_mntp_blocks_with_the_tokenizer_as_the_official_run(tmp_path, capsys):
    from llm2vec_hf import cli

    official = OFFICIAL["runs"]["mntp/Llama2"]
    assert cli.main(["train", str(CONFIGS / "mntp" / "llama-2-7b-chat.yaml"), "--print-config",
                     "--model_name_or_path", str(MODEL), "--dataset_name", "",
                     "--train_file", str(FIXTURES / "corpus.txt"),
                     "--max_seq_length", "16", "--per_device_train_batch_size", "4", "--use_cpu", "true",
                     "--bf16", "false"]) == 0
    schedule = json.loads(capsys.readouterr().out)["lr_schedule"]
    blocks = len(official["blocks"])
    assert schedule["steps_per_epoch"] == math.ceil(blocks / 4)
    assert schedule["num_training_steps"] == 3 * math.ceil(blocks / 4)
    # the official run's learning rates follow from that decay length
    from llm2vec_hf.training.schedule import learning_rates

    recipe = recipe_for("mntp", "llama-2-7b-chat", tmp_path)
    rates = learning_rates(recipe, schedule["num_training_steps"], STOP)
    assert rates == pytest.approx(official["learning_rates"], rel=1e-9)


# --------------------------------------------------------------------------------------------------------------
# The deliberate differences from the official scripts (docs/architecture.md, differences table)
# --------------------------------------------------------------------------------------------------------------
def test_blank_mask_without_an_underscore_in_the_vocabulary_is_an_error(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from llm2vec_hf.training.mntp import mask_token_id

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    with pytest.raises(ValueError, match='no token "_"'):
        mask_token_id(tokenizer, None, "blank")
    assert mask_token_id(tokenizer, None, "eos") == 2


def test_mntp_max_train_samples_caps_texts_and_simcse_drops_empty_lines(tmp_path):
    from llm2vec_hf.training.contrastive import load_contrastive_rows
    from llm2vec_hf.training.mntp import load_texts

    recipe = recipe_for("mntp", "llama-2-7b-chat", tmp_path, max_train_samples=3, validation_split_percentage=0)
    assert load_texts(recipe.data)[0] == (FIXTURES / "corpus.txt").read_text().split("\n")[:3]
    text = tmp_path / "lines.txt"
    text.write_text("first line\n\n   \nsecond line\n")
    recipe = recipe_for("simcse", "llama-2-7b-chat", tmp_path, train_file=str(text))
    columns, _ = load_contrastive_rows(recipe)
    assert columns["anchor"] == ["first line", "second line"]


def test_mntp_row_with_nothing_selected_gets_one_token():
    from llm2vec_hf.training.mntp import MNTPDataCollator

    collator = MNTPDataCollator(mask_id=3, vocab_size=50, special_ids=frozenset({1}), mlm_probability=1e-9)
    batch = collator([{"input_ids": [1, 10, 11, 12], "index": 0}, {"input_ids": [1, 13, 14, 15], "index": 1}])
    assert ((batch["labels"] != -100).sum(1) == 1).all()
    assert (batch["labels"][:, 0] == -100).all()  # never the special token


def test_supervised_batches_are_reshuffled_each_epoch():
    from llm2vec_hf.training.data import GroupedBatchSampler

    sampler = GroupedBatchSampler(["a"] * 16 + ["b"] * 16, 4, 1, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second and sorted(map(sorted, first)) != sorted(map(sorted, second))


#: The official run_supervised.py's templates, by the base's hub name (prepare_for_tokenization); bases it does
#: not name get none, and SimCSE never gets one.
OFFICIAL_TEMPLATES = {
    "mistralai/Mistral-7B-Instruct-v0.2": "[INST] {text} [/INST]",
    "meta-llama/Llama-2-7b-chat-hf": "[INST] {text} [/INST]",
    "meta-llama/Meta-Llama-3-8B-Instruct": "<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>",
    "google/gemma-2-9b-it": "<bos><start_of_turn>user\n{text}<end_of_turn>",
}


@pytest.mark.parametrize("path", [p for p in REAL if p.parent.name != "mntp"], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_template_is_the_official_one(path):
    """Bases the official library names get its template; SimCSE never has one. Bases it never trained (the zoo's
    recipes) wrap the text in their chat template's user turn once, as the paper's instructions are fed."""
    recipe = parse_recipe(path, use_cpu=True, bf16=False)
    template = recipe.contrastive.text_template
    if recipe.model.stage != "supervised":
        assert template is None
    elif path.stem in OFFICIAL_NAME:
        assert template == OFFICIAL_TEMPLATES.get(recipe.model.model_name_or_path)
    else:
        assert template.count("{text}") == 1 and template.strip() != "{text}"


def test_print_config_describes_a_gpu_recipe_on_any_machine(capsys):
    """A bf16 recipe prints on a machine without a bf16 accelerator; the printout keeps the recipe's values."""
    from llm2vec_hf import cli

    assert cli.main(["train", str(CONFIGS / "supervised" / "mistral-7b-instruct-v0.2.yaml"), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["training"]["bf16"] is True and printed["training"]["use_cpu"] is False
    assert printed["lr_schedule"]["stop_step"] == 1000 and printed["lr_schedule"]["warmup_steps"] == 300
