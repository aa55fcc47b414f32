"""MNTP's loss with every position projected onto the vocabulary against only the positions that predict a masked
token (`llm2vec_hf.training.mntp.predicted_positions_only`, the default): time and peak memory of one training
step (forward and backward) as the vocabulary grows.

    python benchmarks/mntp_head.py --vocab-sizes 2048,32000,128256 --output benchmarks/results/mntp_head.json

A random Llama of the 26M benchmark body (hidden 512, 8 layers, MLP 1408) per vocabulary size, float32, LoRA r=16
on the seven projections (dropout off), 2 blocks of 512 tokens with 20 % of the positions predicting, as the
recipes' MNTP batch. Each side runs ``--repeats`` steps after a warm-up; the table gives the median step time and
the peak bytes torch's profiler saw allocated during one step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def peak_bytes(step) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    live = peak = 0
    for _, change in sorted((e.start_ns(), e.nbytes()) for e in profiler.profiler.kineto_results.events()
                            if e.name() == "[memory]"):
        live += change
        peak = max(peak, live)
    return peak


def measure(vocab: int, repeats: int, length: int, rows: int) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm2vec_hf.training.mntp import predicted_positions_only

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=length,
                         is_causal=False)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    model.train()
    input_ids = torch.randint(0, vocab, (rows, length))
    labels = torch.where(torch.rand(rows, length) < 0.2, input_ids, torch.full_like(input_ids, -100))

    def full():
        model(input_ids=input_ids, labels=labels).loss.backward()

    def kept():
        with predicted_positions_only(model, labels) as targets:
            model(input_ids=input_ids, labels=labels, shift_labels=targets).loss.backward()

    result = {"vocab": vocab, "tokens": rows * length, "predicting": int((labels[:, 1:] != -100).sum())}
    for name, step in (("full", full), ("kept", kept)):
        step()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        result[f"{name}_step_s"] = statistics.median(times)
        result[f"{name}_peak_mb"] = peak_bytes(step) / 2**20
        model.zero_grad()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-sizes", default="2048,32000,128256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "mntp_head.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(int(v), args.repeats, args.length, args.rows) for v in args.vocab_sizes.split(",")]
    report = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, load {os.getloadavg()}",
              "torch": torch.__version__, "threads": args.threads, "rows": rows}
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['machine']}, torch {torch.__version__}, {args.threads} thread(s)")
    print("| vocabulary | step s, all positions | step s, predicting only | speed-up | peak MB, all "
          "| peak MB, predicting |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['vocab']:,} | {r['full_step_s']:.2f} | {r['kept_step_s']:.2f} | "
              f"{r['full_step_s'] / r['kept_step_s']:.2f}x | {r['full_peak_mb']:.0f} | {r['kept_peak_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
