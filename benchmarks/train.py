"""Training throughput and memory: one MNTP step and one SimCSE step, and CachedMNRL (GradCache) against plain
MNRL at growing batch sizes.

    python benchmarks/train.py [--hidden 256 --layers 4 --seq-len 64] [--output benchmarks/results/train.json]

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
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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


def run_case(case: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", json.dumps(case)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                               # glibc: serve every block of 16 KiB or more by mmap and give it back on free, so
                               # that the resident set follows the live tensors (CPU memory figures).
                               "MALLOC_MMAP_THRESHOLD_": "16384", "MALLOC_TRIM_THRESHOLD_": "0"})
    if done.returncode != 0:
        raise RuntimeError(f"case {case['name']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return 0

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
