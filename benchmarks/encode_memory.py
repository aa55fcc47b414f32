"""Peak memory of ``llm2vec-hf encode`` as the input grows: streaming keeps it bounded.

    python benchmarks/encode_memory.py                    # 10k and 100k short texts, embedded default model
    python benchmarks/encode_memory.py --sizes 1000 10000 # other sizes
    python benchmarks/encode_memory.py --no-baseline      # skip the read-everything comparison

For each size it writes a .txt of short texts (4–16 words of CPython's documentation prose), exports the
embedded default model (src/llm2vec_hf/demo/default_model, a 2.4M-parameter Llama, hidden 192) once, and runs, each
in a fresh process whose peak RSS is read from wait4():

- ``stream``: ``llm2vec-hf encode MODEL --input IN --output OUT`` (chunks of --chunk-size texts, default 8192);
- ``all-at-once``: what the command did before it streamed — read every text into a list, encode them in one
  ``LLM2Vec.encode`` call, ``np.save`` the whole array.

It prints a table and writes benchmarks/results/encode_memory.json (RSS in MiB, wall time, texts/s, and
whether both outputs agree), and for the streaming run its RSS sampled every 5 s (to see whether it levels off).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL_AT_ONCE = """
import sys, numpy as np
from llm2vec_hf import LLM2Vec
from llm2vec_hf.encoding.inputs import iter_inputs
model, source, output, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
items = [item for item, _, _ in iter_inputs(source)]
vectors = LLM2Vec.from_pretrained(model).encode(items, batch_size=batch_size, show_progress_bar=False,
                                                convert_to_numpy=True)
np.save(output, vectors.astype(np.float32))
"""


def short_texts(n: int, seed: int = 0) -> list[str]:
    from llm2vec_hf.training.tiny_model import english_corpus

    words = " ".join(english_corpus()).split()
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        length = rng.randint(4, 16)
        start = rng.randrange(0, len(words) - length)
        texts.append(" ".join(words[start : start + length]))
    return texts


def sample_rss(pid: int, trace: list, stop: threading.Event, every: float) -> None:
    """Appends (seconds, RSS MiB) of process ``pid`` every ``every`` seconds, from /proc."""
    start = time.perf_counter()
    while not stop.wait(every):
        try:
            with open(f"/proc/{pid}/status") as handle:
                kib = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return
        trace.append([round(time.perf_counter() - start, 1), round(kib / 1024, 1)])


def run_measured(command: list[str], threads: int, trace: list | None = None) -> tuple[float, float]:
    """Runs ``command``; returns (peak RSS in MiB of that process, wall seconds); fills ``trace`` with RSS samples."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(process.pid, trace if trace is not None else [], stop, 5.0))
    sampler.start()
    stderr = process.stderr.read()
    stop.set()
    sampler.join()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
    return usage.ru_maxrss / 1024, wall  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunk-size", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of the measured process (1: on a loaded 2-core machine, 2 threads ran 4x slower)")
    parser.add_argument("--no-baseline", action="store_true", help="measure only the streaming command")
    parser.add_argument("--output", default=str(HERE / "results" / "encode_memory.json"))
    args = parser.parse_args()

    import numpy as np

    from llm2vec_hf.demo.assets import default_model_path

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tmp / "default-checkpoint"
        subprocess.run([sys.executable, "-m", "llm2vec_hf.cli", "export", str(default_model_path()),
                        "--output", str(model)], check=True, capture_output=True)
        for n in args.sizes:
            source = tmp / f"texts-{n}.txt"
            source.write_text("\n".join(short_texts(n)) + "\n", encoding="utf-8")
            stream_out, full_out = tmp / f"stream-{n}.npy", tmp / f"full-{n}.npy"
            trace: list = []
            rss, wall = run_measured(
                [sys.executable, "-m", "llm2vec_hf.cli", "encode", str(model), "--input", str(source),
                 "--output", str(stream_out), "--chunk-size", str(args.chunk_size),
                 "--batch-size", str(args.batch_size)],
                args.threads,
                trace,
            )
            row = {"texts": n, "input_mib": source.stat().st_size / 2**20, "stream_rss_mib": rss,
                   "stream_s": wall, "stream_texts_per_s": n / wall, "stream_rss_trace_s_mib": trace}
            print(f"  {n} texts, stream: {rss:.0f} MiB, {wall:.1f} s", flush=True)
            if not args.no_baseline:
                rss, wall = run_measured(
                    [sys.executable, "-c", ALL_AT_ONCE, str(model), str(source), str(full_out), str(args.batch_size)],
                    args.threads,
                )
                delta = float(np.abs(np.load(stream_out) - np.load(full_out)).max())
                row.update(all_at_once_rss_mib=rss, all_at_once_s=wall, max_abs_delta=delta)
                print(f"  {n} texts, all-at-once: {rss:.0f} MiB, {wall:.1f} s, max |Δ| {delta:.2g}", flush=True)
            rows.append(row)

    print()
    header = f"{'texts':>8} {'input MiB':>9} {'stream RSS MiB':>14} {'stream s':>8} {'texts/s':>8}"
    if not args.no_baseline:
        header += f" {'all-at-once RSS MiB':>19} {'all-at-once s':>13} {'max |Δ|':>8}"
    print(header)
    for row in rows:
        line = (f"{row['texts']:>8} {row['input_mib']:>9.1f} {row['stream_rss_mib']:>14.0f} {row['stream_s']:>8.1f}"
                f" {row['stream_texts_per_s']:>8.0f}")
        if "all_at_once_rss_mib" in row:
            line += f" {row['all_at_once_rss_mib']:>19.0f} {row['all_at_once_s']:>13.1f} {row['max_abs_delta']:>8.1g}"
        print(line)

    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "threads": args.threads, "load_average_at_end": os.getloadavg()},
        "model": "embedded default (src/llm2vec_hf/demo/default_model), exported",
        "chunk_size": args.chunk_size,
        "batch_size": args.batch_size,
        "rows": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
