"""``python -m llm2vec_hf.commands.e5 ECHO_DIR OUTPUT.jsonl``: the E5 mix as supervised training JSONL
(`llm2vec_hf.training.e5.convert`)."""

from __future__ import annotations

import argparse
import sys

from ..training import e5
from ..training.data import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm2vec_hf.commands.e5", description=e5.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("echo_dir", help="folder of the E5 mix: allnli.jsonl, dureader.jsonl, ...")
    parser.add_argument("output", help="training JSONL to write (train_file of the supervised recipes)")
    parser.add_argument("--datasets", nargs="+", help="only these datasets (default: all 14)")
    args = parser.parse_args(argv)
    try:
        counts = e5.convert(args.echo_dir, args.output, args.datasets)
    except (DataError, OSError) as error:
        print(f"e5: error: {error}", file=sys.stderr)
        return 2
    print(f"{sum(counts.values())} records from {len(counts)} datasets -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
