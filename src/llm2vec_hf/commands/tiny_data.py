"""``python -m llm2vec_hf.commands.tiny_data [FOLDER] [--family F]``: what the tiny recipes need
(`llm2vec_hf.training.tiny_data.prepare_tiny`)."""

from __future__ import annotations

import argparse

from ..training import tiny_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm2vec_hf.commands.tiny_data",
                                     description=tiny_data.__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="runs/tiny")
    parser.add_argument("--family", default="llama")
    args = parser.parse_args(argv)
    for name, path in tiny_data.prepare_tiny(args.folder, args.family).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
