"""Scale benchmark: export, load and encode at real model shapes (checkpoints from make_large_checkpoint.py).

Each measurement runs in a fresh process; peak RSS is that process's VmHWM (/proc/self/status), which, unlike
ru_maxrss, does not include the parent's peak. Writes JSON and prints a markdown table.

    python benchmarks/scale.py --model sheared-1.3b=benchmarks/.models/sheared-1.3b \\
        --steps export,load,encode-bf16,rounding --output benchmarks/results/scale.json
    python benchmarks/scale.py --model sheared-1.3b=benchmarks/.models/sheared-1.3b \\
        --steps train-mntp,train-simcse,train-supervised,train-supervised-gradcache

The train-* steps run one optimizer step per stage (``TRAIN_STEPS``); the memory plan of the same step on a CPU
(``llm2vec_hf.training.memory_plan``) is written beside the measured peak RSS. ``--train-dtype float32`` trains in
float32 where the CPU has no bfloat16 matrix unit (AVX2 only: bf16 matmuls are emulated, ~20x slower); the plan is
then made for float32 too.

The *-official steps do the same work with the official llm2vec 0.2.3 in its own environment (``--official-python``,
e.g. benchmarks/.venv-official/bin/python made by benchmarks/encode.py: torch 2.13.0, llm2vec 0.2.3, transformers
4.44.2 and peft 0.13.2): it loads MODEL/base with the MNTP adapter
merged and the supervised adapter on top, as the official README does. Both sides encode the same texts (written
to MODEL/texts-N.json by the driver), with mean pooling at length 512; ``vectors`` in the JSON compares them
(max |Δ|, min cosine) on the texts both encoded.

MODEL folders hold base/, mntp/ and supervised/ (make_large_checkpoint.py); export writes MODEL/export.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: One training step per stage at a CPU-sized batch (rows x texts per row x TRAIN_LENGTH tokens), without gradient
#: checkpointing so that the activations are a large part of the peak the memory plan is checked against.
TRAIN_STEPS = {
    "train-mntp": {"stage": "mntp", "per_device_train_batch_size": 8},
    "train-simcse": {"stage": "simcse", "per_device_train_batch_size": 4},
    # 2 records = 6 texts: at 4 records the float32 1.3B step plans 15.6 GB, too near this 24 GB machine's RAM
    "train-supervised": {"stage": "supervised", "per_device_train_batch_size": 2},
    "train-supervised-gradcache": {"stage": "supervised", "per_device_train_batch_size": 2, "use_gradcache": True,
                                   "gradcache_mini_batch_size": 2},
}
TRAIN_LENGTH = 128
OFFICIAL_STEPS = ("load-official", "encode-official-bf16", "encode-official-fp32")
STEPS = ("export", "load", "encode-bf16", "encode-fp32", "rounding", *TRAIN_STEPS, *OFFICIAL_STEPS)


def rss_mb(field: str = "VmRSS") -> float:
    """Resident MB now: all of it (VmRSS), or its anonymous part (RssAnon: what the process allocated) or its
    file-backed part (RssFile: mapped file pages, which the kernel can drop and read again under pressure)."""
    return int(re.search(field + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def peak_rss_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def folder_weights_gb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e9


def texts(count: int) -> list[str]:
    """The mixed-length English texts of benchmarks/encode.py (the 26M rows of RESULTS.md encode the same)."""
    from encode import make_corpus  # benchmarks/encode.py, next to this file

    return make_corpus(count)


def texts_file(model: Path, count: int) -> Path:
    """MODEL/texts-COUNT.json: the texts every encode step of both sides reads."""
    path = model / f"texts-{count}.json"
    if not path.exists():
        path.write_text(json.dumps(texts(count)))
    return path


def official_adapter(model: Path, name: str) -> str:
    """MODEL/NAME as the official library reads it: adapter_config.json without the keys that newer peft releases
    write (their defaults; peft 0.13's LoraConfig refuses unknown keys), and the weights under the names the
    official training saves (peft wraps the inner ``…BiModel``: ``base_model.model.layers…``). peft 0.13 loads
    ``base_model.model.model.layers…`` onto a ``…BiModel`` as nothing at all, without an error (measured: every
    lora_B stays zero), so the official side would otherwise encode with the bare base."""
    import inspect

    from peft import LoraConfig
    from safetensors.torch import load_file, save_file

    folder = model / f"official-{name}"
    folder.mkdir(exist_ok=True)
    known = set(inspect.signature(LoraConfig).parameters)
    config = json.loads((model / name / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({k: v for k, v in config.items() if k in known}))
    weights = load_file(str(model / name / "adapter_model.safetensors"))
    save_file({key.replace("base_model.model.model.", "base_model.model.", 1): value for key, value in weights.items()},
              str(folder / "adapter_model.safetensors"))
    return str(folder)


def official_worker(step: str, model: Path, count: int) -> dict:
    """A step of the official llm2vec 0.2.3 (runs in its environment: imports neither llm2vec_hf nor encode.py)."""
    import numpy as np
    import torch
    from llm2vec import LLM2Vec
    from peft import PeftModel

    started = time.perf_counter()
    dtype = torch.float32 if step.endswith("fp32") else torch.bfloat16
    l2v = LLM2Vec.from_pretrained(str(model / "base"), peft_model_name_or_path=official_adapter(model, "mntp"),
                                  merge_peft=True, torch_dtype=dtype, pooling_mode="mean", max_length=512)
    l2v.model = PeftModel.from_pretrained(l2v.model, official_adapter(model, "supervised"))
    l2v.tokenizer.model_input_names = ["input_ids", "attention_mask"]  # the official forward takes no token_type_ids
    result = {"step": step, "dtype": str(dtype).removeprefix("torch."), "load_seconds": time.perf_counter() - started,
              "rss_after_load_mb": rss_mb()}
    if step.startswith("encode"):
        batch = json.loads(texts_file(model, count).read_text())
        loaded = time.perf_counter()
        vectors = l2v.encode(batch, batch_size=16, show_progress_bar=False, convert_to_numpy=True)
        result.update(encode_seconds=time.perf_counter() - loaded, texts=count,
                      tokens=sum(len(l2v.tokenizer(t)["input_ids"]) for t in batch))
        result["tokens_per_second"] = result["tokens"] / result["encode_seconds"]
        np.save(model / f"vectors-{step}.npy", np.asarray(vectors, dtype=np.float32))
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def worker(step: str, model: Path, count: int, train_dtype: str) -> dict:
    import torch

    if step in OFFICIAL_STEPS:
        return official_worker(step, model, count)
    started = time.perf_counter()
    result: dict = {"step": step}
    if step == "export":
        from llm2vec_hf.checkpoint.export import export_checkpoint

        out = model / "export"
        export_checkpoint(str(model / "base"), str(out), adapters=[str(model / "mntp"), str(model / "supervised")],
                          overwrite=True)
        result["output_gb"] = folder_weights_gb(out)
    elif step == "load":
        from llm2vec_hf import LLM2Vec

        l2v = LLM2Vec.from_pretrained(str(model / "export"))
        result["dtype"] = str(l2v.model.dtype).removeprefix("torch.")
        result["weights_gb"] = folder_weights_gb(model / "export")
        # a mixture of experts stored one tensor per expert is stacked on load: the stacks are allocated (anon) and
        # the per-expert pages read for them stay mapped (file) until the files close
        result["rss_anon_after_load_mb"], result["rss_file_after_load_mb"] = rss_mb("RssAnon"), rss_mb("RssFile")
    elif step.startswith("encode"):
        import numpy as np

        from llm2vec_hf import LLM2Vec

        dtype = torch.bfloat16 if step.endswith("bf16") else torch.float32
        l2v = LLM2Vec.from_pretrained(str(model / "export"), dtype=dtype, pooling_mode="mean", max_length=512)
        result["load_seconds"] = time.perf_counter() - started
        result["rss_after_load_mb"] = rss_mb()  # weights mapped, not yet paged in
        batch = json.loads(texts_file(model, count).read_text())
        loaded = time.perf_counter()
        vectors = l2v.encode(batch, batch_size=16, show_progress_bar=False, convert_to_numpy=True)
        result["encode_seconds"] = time.perf_counter() - loaded
        result["rss_after_encode_mb"] = rss_mb()  # every weight paged in by the forward passes
        result["texts"] = count
        result["tokens"] = sum(len(l2v.tokenizer(t)["input_ids"]) for t in batch)
        result["tokens_per_second"] = result["tokens"] / result["encode_seconds"]
        np.save(model / f"vectors-{step}.npy", np.asarray(vectors, dtype=np.float32))  # compared by the driver
    elif step == "rounding":
        result.update(compare_rounding(model, count))
    elif step in TRAIN_STEPS:
        result.update(train_step(model, TRAIN_STEPS[step], train_dtype))
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def training_texts(folder: Path) -> dict[str, Path]:
    """Training data whose every text fills TRAIN_LENGTH tokens (the plan counts full-length texts): runs of five
    paragraphs of the tiny corpus; supervised records in two datasets, as the E5 mix has several."""
    from llm2vec_hf.loading.json_files import write_jsonl
    from llm2vec_hf.training.tiny_model import english_corpus

    paragraphs = list(english_corpus())
    long_texts = [" ".join(paragraphs[i:i + 5]) for i in range(0, len(paragraphs) - 5, 5)]
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(long_texts) + "\n")
    supervised = folder / "supervised.jsonl"
    write_jsonl(supervised, [{"query": text, "positive": long_texts[(i + 1) % len(long_texts)],
                              "negative": long_texts[(i + 2) % len(long_texts)], "instruction": "Retrieve the text",
                              "dataset": f"set-{i % 2}"} for i, text in enumerate(long_texts)])
    return {"corpus": corpus, "supervised": supervised}


def train_recipe(model: Path, settings: dict, dtype: str = "bfloat16"):
    """The recipe of one train-* step: MODEL/base (contrastive stages on top of MODEL/mntp, as the recipes), in
    ``dtype`` (bf16 as the shipped recipes, or float32 on a CPU without bf16 matmuls), one optimizer step."""
    from llm2vec_hf.training import parse_recipe

    data = training_texts(model / "train-data")
    stage = settings["stage"]
    values = {
        "model_name_or_path": str(model / "base"), "max_seq_length": TRAIN_LENGTH, "lora_r": 16,
        "train_file": str(data["supervised" if stage == "supervised" else "corpus"]),
        "output_dir": str(model / f"train-{stage}"), "overwrite_output_dir": True, "max_steps": 1,
        "save_strategy": "no", "report_to": "none", "use_cpu": True, "bf16": dtype == "bfloat16", "dtype": dtype,
        "gradient_checkpointing": False, "disable_tqdm": True, "dataloader_num_workers": 0, **settings,
    }
    if stage != "mntp":
        values["peft_model_name_or_path"] = [str(model / "mntp")]
    return parse_recipe(values)


def train_step(model: Path, settings: dict, dtype: str) -> dict:
    from llm2vec_hf.training import run_training
    from llm2vec_hf.training.memory_plan import texts_per_row

    recipe = train_recipe(model, settings, dtype)
    run_training(recipe)
    shutil.rmtree(recipe.training.output_dir, ignore_errors=True)
    rows = recipe.training.per_device_train_batch_size
    return {"dtype": dtype, "tokens_per_step": rows * texts_per_row(recipe) * TRAIN_LENGTH}


def planned(row: dict, folder: Path) -> dict:
    """The memory plan of a train-* row's step on a CPU, from the current ``memory_plan`` (computed here, not in
    the measured process, so the measured peak holds nothing of it)."""
    from llm2vec_hf.training.memory_plan import plan

    estimate = plan(train_recipe(folder, TRAIN_STEPS[row["step"]], row.get("dtype", "bfloat16")), device="cpu")
    for stale in ("plan_bytes", "plan_total_mb"):  # an earlier version's keys
        row.pop(stale, None)
    total_mb = estimate["bytes"]["total"] / 2**20
    return {"micro_batch": estimate["micro_batch"], "plan_mb": {k: round(v / 2**20) for k, v in
                                                                estimate["bytes"].items()},
            "plan_over_measured": round(total_mb / row["peak_rss_mb"], 3)}


def compare_rounding(model: Path, count: int) -> dict:
    """The two ways to merge into bfloat16 (`merged_weights.MERGE_ROUNDING`) against PEFT's merge_and_unload on
    the base loaded in bfloat16 (the official path), and both against the exact float32 merge: weights that
    differ, and vectors (max |Δ|, min cosine)."""
    import torch

    from llm2vec_hf import LLM2Vec
    from llm2vec_hf.checkpoint import merged_weights
    from llm2vec_hf.checkpoint.export import export_checkpoint
    from llm2vec_hf.loading.models import load_bidirectional

    adapters = [str(model / "mntp"), str(model / "supervised")]
    batch = texts(count)
    out: dict = {}
    folders = {}
    for rounding in ("per_adapter", "float32"):
        merged_weights.MERGE_ROUNDING = rounding
        folders[rounding] = export_checkpoint(str(model / "base"), str(model / f"rounding-{rounding}"),
                                              adapters=adapters, dtype="bfloat16", overwrite=True)
    merged_weights.MERGE_ROUNDING = "per_adapter"
    peft, tokenizer, _ = load_bidirectional(str(model / "base"), adapters, dtype="bfloat16")
    reference = peft.state_dict()
    for rounding, folder in folders.items():
        mine = LLM2Vec.from_pretrained(folder)
        settings = mine.settings
        differing = total = 0
        worst = 0.0
        for name, tensor in mine.model.state_dict().items():
            diff = tensor.float() - reference[name].float()
            differing += int((diff != 0).sum())
            total += diff.numel()
            worst = max(worst, float(diff.abs().max()))
        out[f"{rounding}_weights_differing_from_peft"] = differing
        out[f"{rounding}_weights_max_abs_vs_peft"] = worst
        out[f"{rounding}_vectors"] = mine.encode(batch, batch_size=16, show_progress_bar=False).float()
        del mine
    out["weights_total"] = total
    l2v_peft = LLM2Vec(peft, tokenizer, settings=settings)
    peft_vectors = l2v_peft.encode(batch, batch_size=16, show_progress_bar=False).float()
    del l2v_peft, peft, reference
    exact, tokenizer, _ = load_bidirectional(str(model / "base"), adapters, dtype="float32")
    l2v_exact = LLM2Vec(exact, tokenizer, settings=settings)
    exact_vectors = l2v_exact.encode(batch, batch_size=16, show_progress_bar=False)
    for rounding in folders:
        vectors = out.pop(f"{rounding}_vectors")
        for name, other in (("peft_bf16", peft_vectors), ("exact_fp32", exact_vectors)):
            out[f"{rounding}_vs_{name}_max_abs"] = float((vectors - other).abs().max())
            out[f"{rounding}_vs_{name}_min_cosine"] = float(torch.nn.functional.cosine_similarity(vectors, other).min())
    out["peft_bf16_vs_exact_fp32_max_abs"] = float((peft_vectors - exact_vectors).abs().max())
    out["peft_bf16_vs_exact_fp32_min_cosine"] = float(
        torch.nn.functional.cosine_similarity(peft_vectors, exact_vectors).min())
    for rounding in folders:
        shutil.rmtree(model / f"rounding-{rounding}", ignore_errors=True)
    return out


#: The pairs of encode steps whose vectors are compared: what bf16 costs, and each dtype against the official.
VECTOR_PAIRS = (("encode-fp32", "encode-bf16"), ("encode-official-bf16", "encode-bf16"),
                ("encode-official-fp32", "encode-fp32"), ("encode-official-fp32", "encode-official-bf16"))


def compare_vectors(folders: dict[str, str], known: dict) -> dict:
    """max |Δ| and min cosine between the vectors of VECTOR_PAIRS, on the texts both steps encoded (a prefix:
    the texts are the same generator's)."""
    import numpy as np

    out = dict(known)
    for name, folder in folders.items():
        for first, second in VECTOR_PAIRS:
            paths = [Path(folder) / f"vectors-{step}.npy" for step in (first, second)]
            if not all(path.exists() for path in paths):
                continue
            a, b = (np.load(path) for path in paths)
            n = min(len(a), len(b))
            a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
            cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            out[f"{name}: {first} vs {second}"] = {"texts": n, "max_abs": float(np.abs(a - b).max()),
                                                   "min_cosine": float(cosine.min())}
    return out


def machine() -> dict:
    load = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 2**20
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory, 1), "load_average": load,
            "torch_threads": os.environ.get("OMP_NUM_THREADS")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--steps", default="export,load,encode-bf16")
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--output", default="benchmarks/results/scale.json")
    parser.add_argument("--train-dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--official-python", help="python of an environment with llm2vec==0.2.3 (*-official steps)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        step, folder, count, train_dtype = args.worker
        print(json.dumps(worker(step, Path(folder), int(count), train_dtype)))
        return 0
    results = json.loads(Path(args.output).read_text()) if Path(args.output).exists() else {"rows": []}
    for spec in args.model:
        name, _, folder = spec.partition("=")
        for step in args.steps.split(","):
            if step not in STEPS:
                parser.error(f"unknown step {step}; choose from {', '.join(STEPS)}")
            if step in OFFICIAL_STEPS and not args.official_python:
                parser.error(f"{step} needs --official-python")
            if step.startswith("encode"):
                texts_file(Path(folder), args.texts)
            python = args.official_python if step in OFFICIAL_STEPS else sys.executable
            before = machine()
            proc = subprocess.run([python, __file__, "--model", spec, "--worker", step, folder, str(args.texts),
                                   args.train_dtype], capture_output=True, text=True)
            if proc.returncode != 0:
                row = {"model": name, "step": step, "error": proc.stderr.strip().splitlines()[-1:]}
            else:
                row = {"model": name, **json.loads(proc.stdout.strip().splitlines()[-1])}
            row["machine_before"], row["machine_after"] = before, machine()
            print(json.dumps(row), flush=True)
            results["rows"] = [r for r in results["rows"] if (r["model"], r["step"]) != (name, step)] + [row]
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    folders = dict(spec.partition("=")[::2] for spec in args.model)
    for row in results["rows"]:
        if row["step"] in TRAIN_STEPS and "peak_rss_mb" in row and row["model"] in folders:
            row.update(planned(row, Path(folders[row["model"]])))
    results["vectors"] = compare_vectors(folders, results.get("vectors", {}))
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print("| model | step | seconds | peak RSS MB | notes |\n|---|---|---:|---:|---|")
    for row in results["rows"]:
        notes = {k: v for k, v in row.items() if k not in ("model", "step", "seconds", "peak_rss_mb", "machine_before",
                                                           "machine_after")}
        print(f"| {row['model']} | {row['step']} | {row.get('seconds', 0):.1f} | {row.get('peak_rss_mb', 0):.0f} | "
              f"{json.dumps(notes)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
