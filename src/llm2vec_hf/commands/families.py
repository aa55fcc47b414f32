"""``llm2vec-hf families``: the supported, refused and unavailable model families, and what the conformance suite
measured for each on the oldest and newest supported transformers (``llm2vec_hf.families``; docs/families.md).
"""

from __future__ import annotations

HELP = "list the model families: supported, refused, and the support matrix the tests measured"


def add_arguments(parser) -> None:
    parser.add_argument("--markdown", action="store_true", help="print the Markdown table of docs/families.md")


def main(args) -> int:
    from ..families import render_matrix

    print(render_matrix(markdown=args.markdown), end="")
    return 0
