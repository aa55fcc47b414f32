"""Training throughput and memory: one MNTP step and one SimCSE step, and CachedMNRL (GradCache) against plain
MNRL at growing batch sizes; with ``--side-by-side``, whole training runs against the official scripts.

    python benchmarks/train.py [--hidden 256 --layers 4 --seq-len 64] [--output benchmarks/results/train.json]
    python benchmarks/train.py --side-by-side --official-python .venv-official/bin/python \
        --official benchmarks/.official [--shape llama-26m --steps 20 --rounds 2 --stages mntp,simcse,supervised]
    python benchmarks/train.py --side-by-side --shape sheared-1.3b --base benchmarks/.models/sheared-1.3b/base \
        --max-seq-length 128 --steps 3 --rounds 1 --threads 2

Side by side (`side_by_side`): the official experiments/run_mntp.py, run_simcse.py and run_supervised.py (a
checkout of McGill-NLP/llm2vec, run unmodified in their own environment with a config JSON: the official
Sheared-LLaMA recipe file with the model, data, sizes and stop step replaced) against ``llm2vec-hf train`` with
the project's Sheared-LLaMA recipe (configs/) and the same replacements. Same random Llama (benchmarks/encode.py's
shapes, written here), same data (benchmarks/train_data.py: an E5-like mix, Wikipedia-like text), same batch,
steps, seed, float32, sdpa attention, gradient checkpointing as the recipes. Each run is its own process; the
two sides alternate, round after round. Every ``Trainer.training_step`` is timed (forward, loss, backward; the
first step is a warm-up and not counted), with its loss and its real (attention-mask) tokens; peak RSS is the
process's ``VmHWM`` over the timed steps, and over the whole run.

Each measurement runs in a fresh process on a random decoder built on the spot (no download), through the same
trainers that ``llm2vec-hf train`` uses (``trainer.training_step``: forward, loss, backward). Reported:
tokens/s of the step (median of ``--repeats`` steps after one warm-up step; tokens = non-padding tokens of
all texts in the batch) and the step's peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the memory
held before the step, on CPU the peak resident set (Linux ``VmHWM``, reset before the step) above the resident
set before it, with glibc told to map every block of 16 KiB or more separately and return it on free, so that
the resident set follows the live tensors. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

def _rss_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def measure(case: dict) -> dict:
    """Runs one case in this process; returns its figures."""
    import torch

    torch.set_num_threads(case["threads"])
    from llm2vec_hf.training import parse_recipe
    from llm2vec_hf.training.contrastive import build_contrastive_trainer
    from llm2vec_hf.training.mntp import build_mntp_trainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    values = {
        "stage": case["stage"], "model_name_or_path": case["base"], "train_file": case["corpus"],
        "max_seq_length": case["seq_len"], "lora_r": 16, "output_dir": case["output_dir"],
        "per_device_train_batch_size": case["batch"], "max_steps": case["repeats"] + 1, "save_strategy": "no",
        "report_to": "none", "disable_tqdm": True, "use_cpu": device == "cpu", "max_train_samples": 4000,
        "validation_split_percentage": 0, "simcse_dropout": 0.3,
        "use_gradcache": case.get("gradcache", False), "gradcache_mini_batch_size": case.get("mini_batch", 8),
    }
    if device == "cuda":
        values["bf16"] = True
    recipe = parse_recipe(values)
    build = build_mntp_trainer if case["stage"] == "mntp" else build_contrastive_trainer
    trainer, _ = build(recipe, None)
    trainer.create_optimizer_and_scheduler(num_training_steps=recipe.training.max_steps)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which we bypass
    model = trainer.model.to(trainer.args.device)
    model.train()
    batches = iter(trainer.get_train_dataloader())
    times, peak = [], 0
    for step in range(case["repeats"] + 1):
        batch = next(batches)
        tokens = sum(int(v.sum()) for k, v in batch.items() if k.endswith("attention_mask"))
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            before = _rss_kb("VmRSS") * 1024
        start = time.perf_counter()
        trainer.training_step(model, batch)
        if device == "cuda":
            torch.cuda.synchronize()
            step_peak = torch.cuda.max_memory_allocated() - before
        else:
            step_peak = _rss_kb("VmHWM") * 1024 - before
        elapsed = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        if step > 0:  # the first step warms up kernels and allocators
            times.append(tokens / elapsed)
            peak = max(peak, step_peak)
    return {**{k: case[k] for k in ("name", "stage", "batch", "seq_len")}, "gradcache": case.get("gradcache", False),
            "device": device, "tokens_per_s": statistics.median(times), "peak_step_mib": peak / 2**20}


def instrument_trainer(records: list[dict], profile_step: int | None = None) -> None:
    """Times every ``transformers.Trainer.training_step`` (both sides' trainers inherit it) and records its loss,
    real tokens and, from the second step on, the process's peak RSS over the timed steps. Step ``profile_step``
    (1-based) runs under torch.profiler (its ops' self times; not a timed step)."""
    import torch
    import transformers

    def real_tokens(value) -> int:
        if isinstance(value, Mapping):  # dicts and transformers' BatchEncoding
            return sum(int(v.sum()) if k.endswith("attention_mask") else real_tokens(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return sum(real_tokens(v) for v in value)
        return 0

    training_step = transformers.Trainer.training_step

    def timed_step(self, model, inputs, *args, **kwargs):
        if len(records) == 1:  # after the warm-up step: the peak of the timed steps only
            Path("/proc/self/clear_refs").write_text("5")
        rss_before = _rss_kb("VmRSS") / 1024
        profiled = len(records) + 1 == profile_step
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profiled else None
        if profiler:
            profiler.__enter__()
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = training_step(self, model, inputs, *args, **kwargs)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        record = {"seconds": seconds, "cpu_seconds": cpu_seconds, "loss": value, "tokens": real_tokens(inputs), "rss_before_mib": rss_before,
                  "peak_rss_mib": _rss_kb("VmHWM") / 1024}
        if profiler:
            profiler.__exit__(None, None, None)
            self_seconds: dict[str, float] = {}
            for event in profiler.key_averages():
                self_seconds[event.key] = self_seconds.get(event.key, 0.0) + event.self_cpu_time_total / 1e6
            record["profile"] = {"wall_seconds": seconds, "self_seconds": self_seconds}
        records.append(record)
        return loss

    transformers.Trainer.training_step = timed_step


def record_e5_order(served: list) -> None:
    """Records, in ``served``, the (dataset, query, positive) of each record in the order the official ``E5Data``
    serves them (its ``SequentialSampler`` walks that list); observation only, the loader runs unchanged."""
    from llm2vec.dataset.E5Data import E5Data

    load_data = E5Data.load_data

    def recording_load_data(self, *args, **kwargs):
        load_data(self, *args, **kwargs)
        # texts are "[instruction; ]<separator>text": the separator splits what the encoder pools from the prompt
        served.extend([s.task_name, s.query.split(self.separator, 1)[1], s.positive.split(self.separator, 1)[1]]
                      for s in self.data)

    E5Data.load_data = recording_load_data


def official_e5_order(python: str, official: str, echo_data: Path, batch: int, seed: int) -> list[list[str]]:
    """The order the official run_supervised.py serves the E5 records in: it seeds Python's ``random`` and then
    builds ``E5Data``, which shuffles with it (per dataset, then the batches); the same two calls, in its venv."""
    code = (f"import json, sys; sys.path.insert(0, {official!r})\n"
            "from accelerate import PartialState; PartialState()  # the loader logs through accelerate\n"
            "from transformers import set_seed; from llm2vec.dataset.utils import load_dataset\n"
            f"set_seed({seed}); data = load_dataset('E5', split='train', file_path={str(echo_data)!r}, "
            f"effective_batch_size={batch})\n"
            "print(json.dumps([[s.task_name, s.query.split(data.separator, 1)[1], "
            "s.positive.split(data.separator, 1)[1]] for s in data.data]))")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"the official E5 order could not be read:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows_in_order(served: list[list[str]], train_file: Path) -> list[int]:
    """llm2vec-hf's row index (its line in ``train_file``) of each served (dataset, query, positive)."""
    rows = {}
    for index, line in enumerate(train_file.read_text().splitlines()):
        record = json.loads(line)
        rows[(record["dataset"], record["query"], record["positive"])] = index
    missing = [key for key in map(tuple, served) if key not in rows]
    if missing:
        raise RuntimeError(f"{len(missing)} official records are not in {train_file}, e.g. {missing[0][:2]}")
    return [rows[tuple(key)] for key in served]


def replay_batch_order(order: list[int], batch: int) -> None:
    """Makes llm2vec-hf's batch sampler serve ``order`` (row indices) in batches of ``batch``: the official
    order, so that both sides train on the same batches (the sampler's own order is a seeded shuffle too)."""
    from llm2vec_hf.training.data import GroupedBatchSampler

    GroupedBatchSampler.global_batches = lambda self: [order[i : i + batch] for i in range(0, len(order), batch)]


def run_side(spec: dict) -> dict:
    """One training run of one side (in this process); returns its per-step records."""
    records: list[dict] = []
    instrument_trainer(records, spec.get("profile_step"))
    served: list[list[str]] = []
    start = time.perf_counter()
    if spec["side"] == "official":
        import runpy

        sys.path.insert(0, spec["official"])
        if spec.get("record_e5_order"):
            record_e5_order(served)
        work = Path(spec["work"])
        work.mkdir(parents=True, exist_ok=True)
        (work / "config.json").write_text(json.dumps(spec["config"]))
        sys.argv = [spec["script"], str(work / "config.json")]
        os.chdir(work)
        runpy.run_path(spec["script"], run_name="__main__")
    else:
        from llm2vec_hf.training import parse_recipe, run_training

        if spec.get("batch_order"):
            replay_batch_order(spec["batch_order"], spec["values"]["per_device_train_batch_size"])
        run_training(parse_recipe(spec["recipe"], **spec["values"]))
    import torch

    return {"records": records, "run_seconds": time.perf_counter() - start, "e5_order": served or None,
            "process_peak_rss_mib": _rss_kb("VmHWM") / 1024, "torch": torch.__version__,
            "transformers": __import__("transformers").__version__}


def run_case(case: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", json.dumps(case)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                               # glibc: serve every block of 16 KiB or more by mmap and give it back on free, so
                               # that the resident set follows the live tensors (CPU memory figures).
                               "MALLOC_MMAP_THRESHOLD_": "16384", "MALLOC_TRIM_THRESHOLD_": "0"})
    if done.returncode != 0:
        raise RuntimeError(f"case {case['name']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


#: Per stage: the official script and recipe file, our recipe, and the sizes a run on a few CPU cores can take
#: (the recipes' own: MNTP 32 x 512, SimCSE 128 x 128, supervised 64 x 512 per device).
STAGES = {
    "mntp": {"script": "run_mntp.py", "batch": 4, "max_seq_length": 512},
    "simcse": {"script": "run_simcse.py", "batch": 32, "max_seq_length": 128},
    "supervised": {"script": "run_supervised.py", "batch": 8, "max_seq_length": 512},
}
OFFICIAL_RECIPE = "Sheared-Llama"
OUR_RECIPE = "sheared-llama-1.3b"


def side_specs(stage: str, args, model: Path, data: dict, work: Path, ours_overrides: dict) -> dict:
    """The two runs of one stage: the official config JSON and our recipe with its overrides."""
    settings = {**STAGES[stage], "batch": args.stage_batches[stage]}
    if args.max_seq_length:
        settings["max_seq_length"] = args.max_seq_length
    official_config = json.loads((Path(args.official) / "train_configs" / stage / f"{OFFICIAL_RECIPE}.json").read_text())
    official_config.update({
        "model_name_or_path": str(model), "output_dir": str(work / "official-out"), "torch_dtype": "float32",
        "attn_implementation": "sdpa", "per_device_train_batch_size": settings["batch"],
        "max_seq_length": settings["max_seq_length"], "stop_after_n_steps": args.steps, "seed": args.seed,
        "save_steps": 1_000_000, "logging_steps": 1, "report_to": "none", "use_cpu": True,
        "dataloader_num_workers": 0, "disable_tqdm": True, "overwrite_output_dir": True,
    })
    official_config.pop("peft_model_name_or_path", None)  # no MNTP adapter: both start from the base
    ours = {"model_name_or_path": str(model), "peft_model_name_or_path": None, "output_dir": str(work / "ours-out"),
            "dtype": "float32", "bf16": False, "attn_implementation": "sdpa",
            "per_device_train_batch_size": settings["batch"], "max_seq_length": settings["max_seq_length"],
            "stop_after_n_steps": args.steps, "seed": args.seed, "save_strategy": "no", "logging_steps": 1,
            "report_to": "none", "use_cpu": True, "dataloader_num_workers": 0, "disable_tqdm": True}
    if stage == "mntp":
        # no evaluation on either side: the official one loads its accuracy metric from the Hub (offline here), and
        # ours evaluates held-out blocks whenever it has some (a final spike of eval batches in the run's peak RSS)
        official_config.update({"dataset_name": None, "dataset_config_name": None, "train_file": str(data["corpus"]),
                                "do_eval": False, "evaluation_strategy": "no"})
        ours.update(dataset_name=None, dataset_config_name=None, train_file=str(data["corpus"]), eval_strategy="no",
                    validation_split_percentage=0)
    elif stage == "simcse":
        official_config["dataset_file_path"] = str(data["wiki"])
        ours["train_file"] = str(data["wiki"])
    else:
        official_config["dataset_file_path"] = str(data["echo_data"])
        ours["train_file"] = str(data["supervised"])
    official_config = {k: v for k, v in official_config.items() if v is not None}
    profile_step = args.steps if args.profile else None
    return {
        "official": {"side": "official", "official": str(Path(args.official).resolve()), "config": official_config,
                     "script": str(Path(args.official).resolve() / "experiments" / settings["script"]),
                     "work": str(work / "official"), "profile_step": profile_step},
        "ours": {"side": "ours", "recipe": str(REPO / "configs" / stage / f"{OUR_RECIPE}.yaml"),
                 "values": {**ours, **ours_overrides}, "profile_step": profile_step},
    }


def run_worker(python: str, spec: dict, threads: int, log: Path) -> dict:
    """Runs one side in its own process; its log (the trainer's, step by step) goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stderr:
        done = subprocess.run([python, __file__, "--worker", json.dumps(spec)], stdout=subprocess.PIPE,
                              stderr=stderr, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                   "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true",
                                   "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                                   "MALLOC_MMAP_THRESHOLD_": "16384", "MALLOC_TRIM_THRESHOLD_": "0"})
    if done.returncode != 0:
        raise RuntimeError(f"{spec['side']} run failed:\n{log.read_text()[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_breakdown(profiled: dict) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from encode import profile_breakdown as breakdown  # the categories of the encoding profile

    return breakdown(profiled)


def summarize(run: dict) -> dict:
    # the first step warms up kernels and allocators; a profiled step runs slower
    timed = [r for r in run["records"][1:] if "profile" not in r]
    profiled = [r["profile"] for r in run["records"] if "profile" in r]
    seconds = [r["seconds"] for r in timed]
    cpu = [r["cpu_seconds"] for r in timed]
    return {"steps": len(run["records"]), "median_step_s": statistics.median(seconds),
            "tokens_per_s": sum(r["tokens"] for r in timed) / sum(seconds),
            # on a shared machine the process's CPU time follows the work done; wall time follows the neighbours
            "tokens_per_cpu_s": sum(r["tokens"] for r in timed) / sum(cpu),
            "real_tokens_per_step": statistics.mean(r["tokens"] for r in timed),
            "peak_rss_steps_mib": timed[-1]["peak_rss_mib"], "peak_rss_process_mib": run["process_peak_rss_mib"],
            # what the steps add to the resident set held before them (model, optimizer, libraries)
            "step_rss_growth_mib": timed[-1]["peak_rss_mib"] - timed[0]["rss_before_mib"],
            "losses": [r["loss"] for r in run["records"]],
            "profile": profile_breakdown(profiled[0]) if profiled else None}


def side_by_side(args) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from encode import build_model
    from train_data import prepare

    work = Path(tempfile.mkdtemp(prefix="llm2vec-train-side-"))
    if args.base:  # a large shape, written once by make_large_checkpoint.py
        model = Path(args.base).resolve()
        shape = base_shape(model)
    else:
        model = work / f"model-{args.shape}"
        shape = build_model(args.shape, model)
    data = prepare(work / "data", records_per_dataset=args.records_per_dataset, seed=args.seed)
    stages = args.stages.split(",")
    variants = [("official", {})] + [(f"ours{suffix}", extra) for suffix, extra in
                                     (("", {}), (":padded", {"padding_free": False}))
                                     if suffix == "" or args.with_padded]
    runs: dict[str, dict[str, list]] = {stage: {name: [] for name, _ in variants} for stage in stages}
    e5_order = None
    if "supervised" in stages:
        e5_order = official_e5_order(args.official_python, str(Path(args.official).resolve()), data["echo_data"],
                                     args.stage_batches["supervised"], args.seed)
        supervised_rows = rows_in_order(e5_order, data["supervised"])
    loads = [os.getloadavg()]
    for round_ in range(args.rounds):
        for stage in stages:
            order = variants if round_ % 2 == 0 else variants[::-1]  # alternate who goes first
            for name, extra in order:
                if stage == "mntp" and name == "ours:padded":
                    continue  # MNTP blocks carry no padding
                specs = side_specs(stage, args, model, data, work / f"{stage}-{name}-{round_}", extra)
                side = "official" if name == "official" else "ours"
                python = args.official_python if side == "official" else sys.executable
                if stage == "supervised":  # both sides train on the official batches, in its order
                    specs["official"]["record_e5_order"] = True
                    specs["ours"]["batch_order"] = supervised_rows
                result = run_worker(python, specs[side], args.threads, work / f"{stage}-{name}-{round_}.log")
                if side == "official" and stage == "supervised" and result["e5_order"] != e5_order:
                    raise RuntimeError("the official run served the E5 records in another order than the one "
                                       "replayed on llm2vec-hf's side: the two sides would train on other batches")
                runs[stage][name].append(result)
                summary = summarize(result)
                print(f"  round {round_} {stage:<10} {name:<12} median step {summary['median_step_s']:.3f} s, "
                      f"{summary['tokens_per_s']:.0f} tokens/s, {summary['tokens_per_cpu_s']:.0f} tokens/CPU-s, peak RSS {summary['peak_rss_steps_mib']:.0f} MiB",
                      file=sys.stderr)
                write_report(args, shape, stages, runs, loads + [os.getloadavg()], final=False)
        loads.append(os.getloadavg())
    write_report(args, shape, stages, runs, loads, final=True)
    return 0


def base_shape(folder: Path) -> dict:
    """The figures `build_model` reports, for a model folder written elsewhere (counted on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    non_embedding = sum(p.numel() for n, p in model.model.named_parameters() if "embed_tokens" not in n)
    return {"non_embedding_params": non_embedding, "hidden": config.hidden_size, "layers": config.num_hidden_layers,
            "vocab_size": config.vocab_size}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "per_round": values}


def side_rows(stages: list[str], runs: dict) -> list[dict]:
    """Per stage and side: the median over rounds and the spread (min, max) of each figure, and the ratio to the
    official side: of the medians, and per round (the runs of one round ran back to back, under the same load)."""
    rows = []
    for stage in stages:
        official = [summarize(r) for r in runs[stage].get("official", [])]
        for name, results in runs[stage].items():
            if not results:
                continue
            summaries = [summarize(r) for r in results]
            row = {"stage": stage, "side": name, "rounds": len(summaries),
                   "step_s": spread([s["median_step_s"] for s in summaries]),
                   "tokens_per_s": spread([s["tokens_per_s"] for s in summaries]),
                   "tokens_per_cpu_s": spread([s["tokens_per_cpu_s"] for s in summaries]),
                   "real_tokens_per_step": statistics.mean(s["real_tokens_per_step"] for s in summaries),
                   "peak_rss_steps_mib": spread([s["peak_rss_steps_mib"] for s in summaries]),
                   "peak_rss_process_mib": spread([s["peak_rss_process_mib"] for s in summaries]),
                   "step_rss_growth_mib": spread([s["step_rss_growth_mib"] for s in summaries]),
                   "losses": [s["losses"] for s in summaries],
                   "profile": next((s["profile"] for s in summaries if s["profile"]), None),
                   "versions": {k: results[0][k] for k in ("torch", "transformers")}}
            if official:
                for key in ("tokens_per_s", "tokens_per_cpu_s"):
                    row[f"{key}_vs_official"] = row[key]["median"] / statistics.median(s[key] for s in official)
                    paired = [o[key] and s[key] / o[key] for s, o in zip(summaries, official)]
                    row[f"{key}_vs_official_per_round"] = spread(paired)
                row["peak_rss_vs_official"] = (row["peak_rss_process_mib"]["max"]
                                               / max(s["peak_rss_process_mib"] for s in official))
                # the same batches in the same order (supervised) give the same first loss: LoRA's B starts at 0
                row["first_loss_minus_official"] = summaries[0]["losses"][0] - official[0]["losses"][0]
            rows.append(row)
    return rows


def print_table(meta: dict, rows: list[dict]) -> None:
    def cell(figure: dict, form: str) -> str:
        return f"{figure['median']:{form}} ({figure['min']:{form}}-{figure['max']:{form}})"

    print(f"\nrandom llama {meta['shape']} ({meta['non_embedding_params'] / 1e6:.1f}M non-embedding), float32, sdpa, "
          f"gradient checkpointing, {meta['steps']} steps, {meta['rounds']} round(s), {meta['threads']} thread(s); "
          f"median over rounds (min-max); ratio = median of the per-round ratios (min-max)")
    header = (f"{'stage':<11} {'side':<9} {'step s':>20} {'tokens/s':>17} {'vs official':>17} "
              f"{'tokens/CPU-s':>17} {'vs official':>17} {'RSS steps MiB':>17} {'RSS run MiB':>17} {'loss first→last':>16}")
    print(header)
    print("-" * len(header))
    for r in rows:
        losses = r["losses"][0]
        vs = r.get("tokens_per_s_vs_official_per_round")
        vs_cpu = r.get("tokens_per_cpu_s_vs_official_per_round")
        print(f"{r['stage']:<11} {r['side']:<9} {cell(r['step_s'], '6.2f'):>20} {cell(r['tokens_per_s'], '4.0f'):>17} "
              f"{cell(vs, '4.2f') if vs else '':>17} {cell(r['tokens_per_cpu_s'], '4.0f'):>17} "
              f"{cell(vs_cpu, '4.2f') if vs_cpu else '':>17} {cell(r['peak_rss_steps_mib'], '4.0f'):>17} "
              f"{cell(r['peak_rss_process_mib'], '4.0f'):>17} "
              f"{losses[0]:>7.3f}→{losses[-1]:<7.3f}")
    if any(r["profile"] for r in rows):
        print("\nwhere one profiled step spent its time (torch.profiler self time; outside ops: Python, data, "
              "tokenizing)")
        print(f"{'stage':<11} {'side':<9} {'wall s':>7} {'matmul':>7} {'attention':>9} {'other ops':>9} {'outside':>8}")
        for r in rows:
            if r["profile"]:
                p = r["profile"]
                print(f"{r['stage']:<11} {r['side']:<9} {p['wall_seconds']:>7.2f} {p['matmul']:>7.0%} "
                      f"{p['attention']:>9.0%} {p['other_ops']:>9.0%} {p['outside_ops']:>8.0%}")
    print("load average (1, 5, 15 min) before each round and at the end: "
          + "; ".join("/".join(f"{x:.1f}" for x in load) for load in meta["load_average_per_round"]))


def write_report(args, shape: dict, stages: list[str], runs: dict, loads: list, final: bool) -> None:
    """The table (printed when ``final``) and the JSON, rewritten after every run so that a stopped benchmark
    keeps what it measured."""
    meta = {"shape": args.shape, **shape, "steps": args.steps, "rounds": args.rounds, "seed": args.seed,
            "threads": args.threads,
            "stages": {s: {**STAGES[s], "batch": args.stage_batches[s],
                           **({"max_seq_length": args.max_seq_length} if args.max_seq_length else {})}
                       for s in stages},
            "base": args.base, "official_recipe": OFFICIAL_RECIPE,
            "our_recipe": OUR_RECIPE, "load_average_per_round": loads, "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(), "uname": " ".join(platform.uname()),
            "records_per_dataset": args.records_per_dataset}
    rows = side_rows(stages, runs)
    if final:
        print_table(meta, rows)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"meta": meta, "rows": rows, "runs": runs, "complete": final}, indent=1) + "\n")
    if final:
        print(f"\nwrote {output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="batch of the MNTP and SimCSE step")
    parser.add_argument("--mnrl-batches", default="16,32,64,128", help="batch sizes of the MNRL/CachedMNRL sweep")
    parser.add_argument("--mini-batch", type=int, default=8, help="CachedMNRL mini-batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "train.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    side = parser.add_argument_group("side by side with the official scripts")
    side.add_argument("--side-by-side", action="store_true", help="whole runs against the official scripts")
    side.add_argument("--official-python", default=str(REPO / ".venv-official" / "bin" / "python"),
                      help="python of the official environment (llm2vec 0.2.3, transformers<=4.44.2)")
    side.add_argument("--official", default=str(REPO / "benchmarks" / ".official"),
                      help="checkout of McGill-NLP/llm2vec")
    side.add_argument("--shape", default="llama-26m", help="a shape of benchmarks/encode.py")
    side.add_argument("--base", help="instead of --shape: the base folder of a make_large_checkpoint.py output "
                      "(e.g. benchmarks/.models/sheared-1.3b/base); --shape then only names it in the report")
    side.add_argument("--max-seq-length", type=int, help="every stage's max_seq_length (default: the stage's own)")
    side.add_argument("--stages", default="mntp,simcse,supervised")
    side.add_argument("--steps", type=int, default=20, help="optimizer steps per run (the first is a warm-up)")
    side.add_argument("--rounds", type=int, default=2)
    side.add_argument("--seed", type=int, default=42)
    side.add_argument("--records-per-dataset", type=int, default=64, help="E5-like records per dataset")
    side.add_argument("--batch-sizes", default="mntp=4,simcse=32,supervised=8",
                      help="per-device batch of each stage (records; a supervised record is 3 texts)")
    side.add_argument("--profile", action="store_true",
                      help="run each run's last step under torch.profiler (matmul / attention / other / outside ops)")
    side.add_argument("--with-padded", action="store_true", help="also run ours with padding_free false")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return 0
    if args.worker:
        print(json.dumps(run_side(json.loads(args.worker))))
        return 0
    if args.side_by_side:
        args.stage_batches = {**{k: v["batch"] for k, v in STAGES.items()},
                              **{k: int(v) for k, v in (item.split("=") for item in args.batch_sizes.split(","))}}
        if args.output == parser.get_default("output"):
            args.output = str(Path(__file__).parent / "results" / "train_side_by_side.json")
        return side_by_side(args)

    from llm2vec_hf.training.tiny_data import prepare_tiny
    from llm2vec_hf.training.tiny_model import build_tiny_decoder

    work = Path(tempfile.mkdtemp(prefix="llm2vec-train-bench-"))
    paths = prepare_tiny(work / "data")
    base = build_tiny_decoder(work / "base", "llama", hidden_size=args.hidden, num_layers=args.layers)
    common = {"base": str(base), "corpus": str(paths["corpus"]), "seq_len": args.seq_len, "repeats": args.repeats,
              "threads": args.threads}
    cases = [
        {**common, "name": "MNTP step", "stage": "mntp", "batch": args.batch},
        {**common, "name": "SimCSE step", "stage": "simcse", "batch": args.batch},
    ]
    for batch in [int(b) for b in args.mnrl_batches.split(",")]:
        cases.append({**common, "name": f"MNRL b={batch}", "stage": "simcse", "batch": batch})
        cases.append({**common, "name": f"CachedMNRL b={batch}", "stage": "simcse", "batch": batch,
                      "gradcache": True, "mini_batch": args.mini_batch})
    results = []
    for index, case in enumerate(cases):
        case["output_dir"] = str(work / f"out-{index}")
        results.append(run_case(case))
        print(f"  measured {case['name']}", file=sys.stderr)

    header = f"{'case':<20} {'batch':>5} {'seq':>4} {'tokens/s':>10} {'peak step MiB':>14}"
    print(f"\nrandom llama, hidden {args.hidden}, {args.layers} layers, LoRA r=16, device {results[0]['device']}, "
          f"{args.threads} thread(s)")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['name']:<20} {r['batch']:>5} {r['seq_len']:>4} {r['tokens_per_s']:>10.0f} {r['peak_step_mib']:>14.1f}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers

    meta = {"hidden": args.hidden, "layers": args.layers, "seq_len": args.seq_len, "threads": args.threads,
            "mini_batch": args.mini_batch, "torch": torch.__version__, "transformers": transformers.__version__,
            "machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    output.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
