"""``llm2vec-hf encode``: a file of texts in, a ``.npy`` of float32 vectors out (row i = input i).

The input streams through in chunks (``--chunk-size`` texts, default 8192): a first pass counts and checks every
line without keeping any text (a bad line fails before the model loads, with its line number), then each chunk
is read, encoded and written into ``OUTPUT.partial.npy`` at its rows. ``OUTPUT.progress.json`` records, after
each chunk's rows are on disk, how many rows are done and where in the input the next chunk starts. Memory holds
one chunk, whatever the size of the file. The finished file is renamed to OUTPUT, so an OUTPUT that exists is
complete.

A run that was killed resumes where it stopped when it is started again: when the partial output's progress
record names the same input file (path, size, mtime, hash of its first and last MiB), the same checkpoint
(its config files, weight files' sizes and mtimes) and the same instruction. With the same ``--batch-size``,
``--chunk-size``, ``--max-batch-tokens`` and ``--compile`` the result is byte-identical to an uninterrupted run
(chunks start at the same rows, are batched the same way and run the same kernels). A partial output from
another input, checkpoint or prompt is refused with one line; ``--restart`` discards it.

``--processes N`` (or several devices, ``--device cuda:0,cuda:1``) encodes with sentence-transformers'
multi-process pool: one worker per device, each with a copy of the model, loaded through the checkpoint's
sentence-transformers module (the same LLM2Vec semantics, equal vectors within float rounding).
"""

from __future__ import annotations

import argparse

from ..encoding import DEFAULT_CHUNK_SIZE
from ..errors import LLM2VecError

HELP = "embed a .txt or .jsonl file into a .npy file"


def add_arguments(parser) -> None:
    parser.add_argument("model", help="exported checkpoint: folder or Hub repo id")
    parser.add_argument("--input", required=True, help=".txt (a text per line) or .jsonl (text, optional instruction)")
    parser.add_argument("--output", required=True, help=".npy file to write (row i = input i)")
    parser.add_argument("--prompt-name", help="named prompt of the checkpoint, used as the instruction")
    parser.add_argument("--batch-size", type=int, default=32, help="most texts in one forward call (default 32)")
    parser.add_argument("--max-batch-tokens", type=int,
                        help="most tokens in one forward call, padding included (default 2048; raise it on a GPU)")
    parser.add_argument("--device", help="torch device (default: cpu); several, comma-separated, for one worker each")
    parser.add_argument("--processes", type=int, help="encode with N worker processes (sentence-transformers pool)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"texts read, encoded and committed at a time (default {DEFAULT_CHUNK_SIZE})")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the model first (one-off 20-70 s, 1.05-1.2x faster after); default: "
                             "when the input is large enough to pay for it (CPU only)")
    parser.add_argument("--restart", action="store_true", help="discard a partial output instead of resuming it")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    engine = parser.add_argument_group("Ray engine (pip install 'llm2vec-hf[ray]'; docs/scale-out.md)")
    engine.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this machine, into a .npy (default); ray: a Ray cluster, --output is a folder of "
                             "Parquet shards and a manifest; --input may also be Parquet (file or folder)")
    engine.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local cluster)")
    engine.add_argument("--num-workers", type=int, help="encoder actors (default: one per GPU, or per CPU)")
    engine.add_argument("--num-gpus-per-worker", type=float, default=0, help="GPUs per actor (default 0: CPU)")


def main(args) -> int:
    if getattr(args, "engine", "local") == "ray":
        return _main_on_ray(args)
    if getattr(args, "address", None) or getattr(args, "num_workers", None) or getattr(args, "num_gpus_per_worker", 0):
        raise LLM2VecError("--address, --num-workers and --num-gpus-per-worker need --engine ray")
    from ..encoding.file_encoder import encode_file

    count = encode_file(args.model, args.input, args.output, args.prompt_name, args.batch_size, args.device,
                        chunk_size=args.chunk_size, processes=args.processes, restart=args.restart,
                        max_batch_tokens=args.max_batch_tokens, compile_model=args.compile,
                        overwrite=args.overwrite)
    print(f"Wrote {count} vectors to {args.output}")
    return 0


def _main_on_ray(args) -> int:
    """``llm2vec-hf encode --engine ray``."""
    if args.processes is not None or args.device:
        raise LLM2VecError("--engine ray places workers itself: use --num-workers and --num-gpus-per-worker, "
                           "not --processes or --device")
    from ..encoding.ray_engine import encode_path

    manifest = encode_path(
        args.model, args.input, args.output, prompt_name=args.prompt_name, address=args.address,
        rows_per_shard=args.chunk_size, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
        num_workers=args.num_workers, num_gpus_per_worker=args.num_gpus_per_worker or 0, restart=args.restart,
        compile_model=args.compile, overwrite=args.overwrite,
    )
    print(f"Wrote {manifest['rows']} vectors in {len(manifest['shards'])} shards to {args.output}")
    return 0
