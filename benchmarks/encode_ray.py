"""Throughput of ``llm2vec-hf encode --engine ray`` (N CPU actors) against the in-process ``encode``, same corpus.

    python benchmarks/encode_ray.py [--texts 1024] [--workers 2] [--rounds 2]

Model and corpus are those of benchmarks/encode.py (a random 26M-parameter Llama, log-normal English texts). The
in-process path runs with all cores as torch threads; the Ray path with ``--workers`` actors of one core each
on a local cluster started first (its start-up is reported apart, not timed). Rounds alternate between the two
paths (the machine may be shared); each path's best round and median are reported. Ray's time includes
starting the actors and loading the checkpoint in each (a fixed cost per run, which a large corpus amortises).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shape", default="llama-26m")
    parser.add_argument("--chunk-size", type=int, default=128, help="rows per shard (Ray) and per chunk (in-process)")
    parser.add_argument("--output", default=str(HERE / "results" / "encode_ray.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import numpy as np
    import ray
    import torch

    from encode import build_model, make_corpus
    from llm2vec_hf.encoding.file_encoder import encode_file
    from llm2vec_hf.encoding.ray_engine import encode_path, read_vectors
    from llm2vec_hf.checkpoint.export import export_checkpoint

    work = Path(tempfile.mkdtemp(prefix="encode-ray-"))
    try:
        build_model(args.shape, work / "base")
        model = export_checkpoint(str(work / "base"), str(work / "model"), pooling_mode="mean", max_length=512)
        corpus = work / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_corpus(args.texts)))
        cores = os.cpu_count() or 1
        torch.set_num_threads(cores)
        started = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                           "TOKENIZERS_PARALLELISM": "false"}})
        cluster_start = time.perf_counter() - started
        times: dict[str, list[float]] = {"in-process": [], "ray": []}
        for round_number in range(args.rounds):
            for path in ("in-process", "ray"):
                output = work / f"{path}-{round_number}"
                started = time.perf_counter()
                if path == "in-process":
                    encode_file(model, str(corpus), str(output) + ".npy", chunk_size=args.chunk_size)
                else:
                    encode_path(model, str(corpus), str(output), rows_per_shard=args.chunk_size,
                                num_workers=args.workers)
                times[path].append(time.perf_counter() - started)
                print(f"round {round_number} {path}: {times[path][-1]:.1f} s", flush=True)
        local = np.load(str(work / "in-process-0") + ".npy")
        _, on_ray = read_vectors(str(work / "ray-0"))
        result = {
            "machine": f"{cores} cores (shared with other jobs), torch {torch.__version__}, ray {ray.__version__}",
            "shape": args.shape, "texts": args.texts, "workers": args.workers, "chunk_size": args.chunk_size,
            "ray_cluster_start_s": round(cluster_start, 1),
            "seconds": times,
            "texts_per_s_best": {path: round(args.texts / min(t), 1) for path, t in times.items()},
            "texts_per_s_median": {path: round(args.texts / statistics.median(t), 1) for path, t in times.items()},
            "max_abs_diff": float(np.abs(local - on_ray).max()),
            "command": "python benchmarks/encode_ray.py " + " ".join(sys.argv[1:]),
        }
        print(json.dumps(result, indent=2))
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
