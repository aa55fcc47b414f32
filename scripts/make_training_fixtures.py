"""Record the official LLM2Vec training runs on a tiny model, for tests/training/test_training_parity.py.

Run with the reference environment (llm2vec 0.2.3, transformers 4.44, datasets, accelerate, evaluate) and a
checkout of McGill-NLP/llm2vec:

    /work/refenv/bin/python scripts/make_training_fixtures.py --official /work/official

It builds a tiny Llama (hidden 32, 2 layers) with a SentencePiece-style BPE vocabulary trained on the spot
(special tokens that are not the family defaults; "_" and "▁_" both in the vocabulary), then runs the official
experiments/run_mntp.py (the Llama-2 and the Mistral recipe), run_simcse.py and run_supervised.py (the Mistral and
the Llama-3 recipe, so their chat templates apply) for a few steps with the official recipes' schedules, dropout
off, and records in tests/fixtures/official_training/:

* ``model/``: the tiny base (safetensors) and its tokenizer;
* ``corpus.txt``, ``wiki.txt``: the MNTP and SimCSE texts (echo-data/ is hand-written and read from there);
* ``official.json``: per run, the blocks of the grouped corpus (MNTP), the first collated batch (input ids,
  attention and pooling masks, labels), the texts of that batch, the loss at step 0, and the learning rate of
  every optimizer step; plus the official Trainer's learning rate at every step up to the stop for each
  official recipe file at a stated number of steps per epoch.

Nothing here is downloaded. The project's tests read these files only; CI does not need this environment.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "official_training"

# The official recipes' steps per epoch differ with the data; these stand for the real corpora (wiki1m: 1,000,000
# lines / 128 per step; wikitext-103 at 512 tokens / 32 per step; the E5 mix / 512 per step on 8 devices).
REAL_STEPS_PER_EPOCH = {"mntp": 7_500, "simcse": 7_813, "supervised": 2_930}
STOP_FOR_TINY_RUNS = 5

MNTP_TEXT = """ = Snake_case and other names = 

 Python names such as read_file and max_length use snake_case : words joined by an underscore _ between them .
 The _ character alone is a valid name , often used for a value that is thrown away .

 = = History = = 
 Early languages allowed only letters ; later ones added digits and the underscore _ to names .
 Some style guides prefer camelCase , others prefer snake_case for functions and variables .
 A leading underscore , as in _private , marks a name as internal to its module .

 Double underscores surround special names such as __init__ and __len__ in Python classes .
 Constants are often written in upper case with underscores , as in MAX_SIZE or DEFAULT_PORT .

 = = Other uses = = 
 In mathematics the underscore is sometimes used for subscripts , as in x_1 and x_2 .
 Markdown uses _ around a word to make it italic , and __ around a word to make it bold .
 File names such as my_notes_2024.txt avoid spaces by using underscores .

 Some keyboards place the underscore _ next to the zero key , shared with the minus sign .
 Typewriters used the underscore to underline words by typing over them .
"""

WIKI_TEXT = [
    "The river flows slowly through the old town.",
    "A small bird sings on the branch every morning.",
    "Scientists measured the speed of light with great care.",
    "The library opens at nine and closes at five.",
    "Fresh bread smells wonderful in the early morning.",
    "The train to the coast leaves from platform four.",
    "Mountains in the north are covered with snow in winter.",
    "She wrote a letter to her friend using a blue pen.",
    "Children played football in the park after school.",
    "The museum shows paintings from the last three centuries.",
    "A strong wind blew the leaves across the empty street.",
]


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    specials = ["<unk>", "<|begin|>", "<|finish|>"]  # not the Llama defaults <s> / </s>
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, min_frequency=1,
                                  initial_alphabet=list("_▁"))
    corpus = MNTP_TEXT.splitlines() + WIKI_TEXT + ["_ _ _ x _ y _ z", "a _ b _ c", "[INST] [/INST]"] * 5
    corpus += [json.loads(line)[k] for f in sorted((OUT / "echo-data").glob("*.jsonl"))
               for line in f.read_text().splitlines() for k in ("query", "positive", "negative")]
    tokenizer.train_from_iterator(corpus, trainer)
    bos = tokenizer.token_to_id("<|begin|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin|> $A", pair="<|begin|> $A <|begin|> $B", special_tokens=[("<|begin|>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin|>", eos_token="<|finish|>",
                                   unk_token="<unk>", model_max_length=256,
                                   model_input_names=["input_ids", "attention_mask"])
    assert fast.convert_tokens_to_ids("_") != fast.unk_token_id, "the vocabulary needs '_'"
    assert fast("_", add_special_tokens=False)["input_ids"] != [fast.convert_tokens_to_ids("_")], \
        "tokenizer('_') must differ from the vocabulary's '_' (SentencePiece style)"
    fast.save_pretrained(folder)
    return fast


def build_model(folder: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False, attention_dropout=0.0, torch_dtype="float32")
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2) if parameter.dim() > 1 else None
    model.save_pretrained(folder, safe_serialization=True)


class Recorder:
    """Patches the official Trainer to record the first batch, the step-0 loss and every step's LR."""

    def __init__(self):
        self.lrs, self.loss0, self.batch0, self.collated, self.trainer = [], None, None, [], None

    @contextlib.contextmanager
    def patched(self):
        import transformers

        recorder = self
        trainer_init = transformers.Trainer.__init__
        training_step = transformers.Trainer.training_step

        def init(self, *args, **kwargs):
            trainer_init(self, *args, **kwargs)
            recorder.trainer = self
            collator = self.data_collator

            def record_collate(features):
                before = copy.deepcopy(features)
                output = collator(features)
                if len(recorder.collated) < 1:
                    recorder.collated.append((before, output))
                return output

            self.data_collator = record_collate
            compute_loss = self.compute_loss

            def record_loss(model, inputs, *a, **k):
                result = compute_loss(model, inputs, *a, **k)
                if recorder.loss0 is None:
                    loss = result[0] if isinstance(result, tuple) else result
                    recorder.loss0 = float(loss.detach())
                return result

            self.compute_loss = record_loss

        def step(self, model, inputs, *args, **kwargs):
            recorder.lrs.append(self.lr_scheduler.get_last_lr()[0])
            return training_step(self, model, inputs, *args, **kwargs)

        transformers.Trainer.__init__, transformers.Trainer.training_step = init, step
        try:
            yield self
        finally:
            transformers.Trainer.__init__, transformers.Trainer.training_step = trainer_init, training_step


def run_official(script: Path, config: dict, workdir: Path) -> Recorder:
    config_file = workdir / "config.json"
    config_file.write_text(json.dumps(config))
    recorder = Recorder()
    argv, cwd = sys.argv, os.getcwd()
    sys.argv = [str(script), str(config_file)]
    os.chdir(workdir)
    try:
        with recorder.patched():
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
        os.chdir(cwd)
    return recorder


def official_config(official: Path, stage: str, name: str, **changes) -> dict:
    config = json.loads((official / "train_configs" / stage / f"{name}.json").read_text())
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


def tensors(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tensors(v) for v in value]
    return value


COMMON = {"torch_dtype": "float32", "attn_implementation": "eager", "gradient_checkpointing": False,
          "lora_dropout": 0.0, "report_to": "none", "save_steps": 100_000, "logging_steps": 1,
          "stop_after_n_steps": STOP_FOR_TINY_RUNS, "use_cpu": True, "dataloader_num_workers": 0,
          "overwrite_output_dir": True, "disable_tqdm": True}


def mntp_run(official: Path, name: str, model: Path, work: Path) -> dict:
    config = official_config(
        official, "mntp", name, model_name_or_path=str(model), dataset_name=None, dataset_config_name=None,
        train_file=str(OUT / "corpus.txt"), max_seq_length=16, per_device_train_batch_size=4,
        do_eval=False, evaluation_strategy="no", eval_steps=None, output_dir=str(work / "out"), **COMMON)
    recorder = run_official(official / "experiments" / "run_mntp.py", config, work)
    dataset = recorder.trainer.train_dataset
    features, output = recorder.collated[0]
    return {
        "config": {k: config[k] for k in ("mask_token_type", "data_collator_type", "mlm_probability",
                                          "max_seq_length", "per_device_train_batch_size")},
        "mask_token_id": recorder.trainer.tokenizer.convert_tokens_to_ids(recorder.trainer.tokenizer.mask_token),
        "blocks": [list(r) for r in dataset["input_ids"]],
        "special_tokens_mask": [list(r) for r in dataset["special_tokens_mask"]],
        "batch0": {"features": [{"input_ids": f["input_ids"], "special_tokens_mask": f["special_tokens_mask"]}
                                for f in features],
                   "input_ids": tensors(output["input_ids"]), "labels": tensors(output["labels"]),
                   "attention_mask": tensors(output["attention_mask"])},
        "loss0": recorder.loss0, "learning_rates": recorder.lrs,
    }


def contrastive_run(official: Path, stage: str, name: str, model: Path, work: Path, **changes) -> dict:
    script = official / "experiments" / f"run_{stage}.py"
    config = official_config(official, stage, name, model_name_or_path=str(model), peft_model_name_or_path=None,
                             output_dir=str(work / "out"), max_seq_length=48, **COMMON, **changes)
    recorder = run_official(script, config, work)
    features, (sentence_features, labels) = recorder.collated[0]
    return {
        "config": {k: config.get(k) for k in ("learning_rate", "loss_scale", "per_device_train_batch_size",
                                              "max_seq_length", "pooling_mode", "simcse_dropout")},
        "texts": [f.texts for f in features],
        "all_texts": [example.texts for example in recorder.trainer.train_dataset] if stage == "supervised" else None,
        "batch0": [{k: tensors(v) for k, v in f.items()} for f in sentence_features],
        "loss0": recorder.loss0, "learning_rates": recorder.lrs,
    }


def real_schedule(official: Path, stage: str, name: str, steps_per_epoch: int, work: Path) -> dict:
    """The official Trainer's LR at every optimizer step up to the stop, for one official recipe file."""
    import torch
    from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments

    config = json.loads((official / "train_configs" / stage / f"{name}.json").read_text())
    known = {k: v for k, v in config.items() if k in TrainingArguments.__dataclass_fields__}
    known.update(output_dir=str(work / "real"), report_to="none", use_cpu=True, save_strategy="no",
                 evaluation_strategy="no", do_eval=False, gradient_checkpointing=False, logging_steps=10_000,
                 disable_tqdm=True, per_device_train_batch_size=1, gradient_accumulation_steps=1)
    (args,) = HfArgumentParser(TrainingArguments).parse_dict(known)
    stop = config["stop_after_n_steps"]

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= stop:
                control.should_training_stop = True

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return {"loss": (self.weight * x).sum()}

    rows = [{"x": torch.ones(1)} for _ in range(steps_per_epoch)]  # one row per step: the epoch has this length
    recorder = Recorder()
    with recorder.patched():
        trainer = Trainer(model=One(), args=args, train_dataset=rows, callbacks=[Stop()])
        trainer.train()
    return {"steps_per_epoch": steps_per_epoch, "num_train_epochs": args.num_train_epochs,
            "learning_rate": args.learning_rate, "warmup_steps": args.warmup_steps,
            "stop_after_n_steps": stop, "learning_rates": recorder.lrs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", default="/work/official", help="checkout of McGill-NLP/llm2vec")
    args = parser.parse_args()
    official = Path(args.official)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_DISABLED"] = "true"
    sys.path.insert(0, str(official))
    (OUT / "corpus.txt").write_text(MNTP_TEXT)
    (OUT / "wiki.txt").write_text("\n".join(WIKI_TEXT) + "\n")
    shutil.rmtree(OUT / "model", ignore_errors=True)
    build_model(OUT / "model")
    results = {"runs": {}, "real_schedules": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("Llama2", "Mistral"):
            work = tmp / f"mntp-{name}"
            work.mkdir()
            results["runs"][f"mntp/{name}"] = mntp_run(official, name, OUT / "model", work)
        work = tmp / "simcse"
        work.mkdir()
        results["runs"]["simcse/Llama2"] = contrastive_run(
            official, "simcse", "Llama2", OUT / "model", work, dataset_file_path=str(OUT / "wiki.txt"),
            simcse_dropout=0.0, per_device_train_batch_size=4)
        # run_supervised.py picks the chat template by the model's name: the tiny model sits under that name.
        for name, hub_name in (("Mistral", "mistralai/Mistral-7B-Instruct-v0.2"),
                               ("MetaLlama3", "meta-llama/Meta-Llama-3-8B-Instruct"),
                               ("Sheared-Llama", "princeton-nlp/Sheared-LLaMA-1.3B")):
            work = tmp / f"supervised-{name}"
            (work / hub_name).parent.mkdir(parents=True)
            shutil.copytree(OUT / "model", work / hub_name)
            # LLM2Vec.from_pretrained takes a local model's name from its config.json.
            config_file = work / hub_name / "config.json"
            config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "_name_or_path": hub_name}))
            run = contrastive_run(official, "supervised", name, Path(hub_name), work,
                                  dataset_file_path=str(OUT / "echo-data"), per_device_train_batch_size=2)
            run["hub_name"] = hub_name
            results["runs"][f"supervised/{name}"] = run
        for stage, names in (("mntp", ("Llama2", "Mistral", "MetaLlama3", "MetaLlama3.1", "Sheared-Llama")),
                             ("simcse", ("Llama2", "Mistral", "MetaLlama3", "Sheared-Llama")),
                             ("supervised", ("Llama2", "Mistral", "MetaLlama3", "MetaLlama3.1", "Sheared-Llama"))):
            for name in names:
                work = tmp / f"real-{stage}-{name}"
                work.mkdir()
                results["real_schedules"][f"{stage}/{name}"] = real_schedule(
                    official, stage, name, REAL_STEPS_PER_EPOCH[stage], work)
    # Official files of one stage share their schedule: each distinct curve is stored once.
    results["curves"] = {}
    for key, schedule in results["real_schedules"].items():
        rates = schedule.pop("learning_rates")
        name = next((k for k, v in results["curves"].items() if v == rates), key)
        results["curves"].setdefault(name, rates)
        schedule["curve"] = name
    import transformers

    import llm2vec

    results["made_with"] = {"transformers": transformers.__version__,
                            "llm2vec": getattr(llm2vec, "__version__", "0.2.3")}
    (OUT / "official.json").write_text(json.dumps(results, separators=(",", ":")) + "\n")
    print(f"wrote {OUT / 'official.json'}")


if __name__ == "__main__":
    main()
