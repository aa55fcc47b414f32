"""Attention over one packed row on a CPU: one masked call, flex attention with a block mask, or a call per text.

    python benchmarks/packed_attention.py [--threads 1] [--texts 40 --text-tokens 51 --row 2048]

One layer's attention of the benchmark's 26M Llama (8 heads of 64) over a row of ``--texts`` texts of
``--text-tokens`` tokens each (the corpus's mean), padded to ``--row``: sdpa with the dense block-diagonal boolean
mask (what a prepared 4D mask gives transformers' sdpa), flex attention (compiled) with a block mask that skips the
blocks outside every text, and sdpa per text with no mask (`varlen_sdpa_attention`). CPU milliseconds per call
(process time, so that other jobs on a shared machine count less), and the largest difference from the masked call.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from torch.nn.functional import scaled_dot_product_attention as sdpa


def cpu_ms(fn, reps: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - start) / reps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--texts", type=int, default=40)
    parser.add_argument("--text-tokens", type=int, default=51)
    parser.add_argument("--row", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "packed_attention.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    heads, head_dim, row = 8, 64, args.row
    lengths = [args.text_tokens] * args.texts
    if sum(lengths) > row:
        parser.error("the texts do not fit in the row")
    segments = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)] + [torch.full((row - sum(lengths),), -1)])
    q, k, v = (torch.randn(1, heads, row, head_dim) for _ in range(3))
    dense = (segments[:, None] == segments[None, :])[None, None]
    block_mask = create_block_mask(lambda b, h, qi, ki: segments[qi] == segments[ki], 1, 1, row, row, device="cpu",
                                   BLOCK_SIZE=128)
    flex = torch.compile(flex_attention, dynamic=False)
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)

    def per_text():
        return [sdpa(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b]) for a, b in zip(starts, starts[1:])]

    reference = sdpa(q, k, v, attn_mask=dense)
    real = slice(0, sum(lengths))
    result = {
        "threads": args.threads, "row": row, "texts": args.texts, "text_tokens": args.text_tokens,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "block_mask_sparsity_percent": round(float(block_mask.sparsity()), 1),
        "ms": {
            "sdpa_dense_mask": round(cpu_ms(lambda: sdpa(q, k, v, attn_mask=dense), args.reps), 2),
            "flex_block_mask": round(cpu_ms(lambda: flex(q, k, v, block_mask=block_mask), args.reps), 2),
            "sdpa_per_text": round(cpu_ms(per_text, args.reps), 2),
        },
        "max_abs_delta_vs_dense": {
            "flex_block_mask": float((flex(q, k, v, block_mask=block_mask) - reference)[:, :, real].abs().max()),
            "sdpa_per_text": float((torch.cat(per_text(), 2) - reference[:, :, real]).abs().max()),
        },
    }
    print(json.dumps(result, indent=2))
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
