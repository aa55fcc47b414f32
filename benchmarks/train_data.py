"""Training data for the side-by-side benchmark (benchmarks/train.py), in the official loaders' formats.

    python benchmarks/train_data.py OUT [--records-per-dataset 64] [--wiki-lines 4000] [--seed 0]

Writes into OUT:

* ``echo-data/{dataset}.jsonl``: an E5-like mix, one file per dataset of the public E5 mix (the official
  ``E5Data`` opens all 14), each line ``{"query", "positive", "negative"}``. Word counts are drawn per dataset,
  log-normal around the medians in `E5_LIKE_WORDS` (queries of a few to a few dozen words beside passages of
  one to several hundred, as in the mix: estimates from the public datasets' descriptions, not measured on the
  mix, which is not on this machine);
* ``train.jsonl``: the same records in llm2vec-hf's supervised format (``llm2vec_hf.training.e5.convert``);
* ``wiki.txt``: Wikipedia-like sentences, one per line (the official ``Wiki1M`` format; SimCSE);
* ``corpus.txt``: Wikipedia-like paragraphs with blank lines between them (wikitext-like; MNTP).

Words come from the project's English corpus (``llm2vec_hf.training.tiny_model.english_corpus``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

#: dataset -> median words of (query, positive, negative); documents of msmarco_document often pass 512 tokens.
E5_LIKE_WORDS = {
    "allnli": (12, 10, 10),
    "dureader": (9, 180, 180),
    "eli5_question_answer": (16, 120, 110),
    "fever": (9, 110, 110),
    "hotpot_qa": (18, 90, 90),
    "miracl": (9, 100, 100),
    "mrtydi": (8, 100, 100),
    "msmarco_document": (6, 320, 320),
    "msmarco_passage": (6, 56, 56),
    "nq": (9, 100, 100),
    "quora_duplicates": (11, 11, 11),
    "squad": (10, 120, 120),
    "t2ranking": (10, 150, 150),
    "trivia_qa": (15, 120, 120),
}
#: spread of the log-normal word counts (0.6: a tenth of the texts under half the median, a tenth over twice it)
SPREAD = 0.6


def word_source() -> list[str]:
    from llm2vec_hf.training.tiny_model import english_corpus

    return " ".join(english_corpus()).split()


def draw_text(rng: random.Random, words: list[str], median: int, cap: int = 700) -> str:
    length = min(cap, max(2, int(rng.lognormvariate(0, SPREAD) * median)))
    start = rng.randrange(0, len(words) - length)
    return " ".join(words[start : start + length])


def write_e5_like(folder: Path, words: list[str], records_per_dataset: int, rng: random.Random) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for dataset, (query, positive, negative) in E5_LIKE_WORDS.items():
        with (folder / f"{dataset}.jsonl").open("w") as out:
            for _ in range(records_per_dataset):
                record = {"query": draw_text(rng, words, query), "positive": draw_text(rng, words, positive),
                          "negative": draw_text(rng, words, negative)}
                out.write(json.dumps(record) + "\n")


def write_wiki(path: Path, words: list[str], lines: int, rng: random.Random) -> None:
    """Sentences of wiki1m's shape: median about 20 words, a tail past 60."""
    path.write_text("".join(draw_text(rng, words, 20, cap=120) + "\n" for _ in range(lines)))


def write_corpus(path: Path, words: list[str], paragraphs: int, rng: random.Random) -> None:
    """wikitext-like: a heading, paragraphs of about 100 words, blank lines between them."""
    lines = []
    for i in range(paragraphs):
        if i % 8 == 0:
            lines += [f" = {draw_text(rng, words, 3, cap=8)} = ", ""]
        lines += [" " + draw_text(rng, words, 100, cap=400) + " ", ""]
    path.write_text("\n".join(lines) + "\n")


def prepare(out: Path, records_per_dataset: int = 64, wiki_lines: int = 4000, corpus_paragraphs: int = 2000,
            seed: int = 0) -> dict[str, Path]:
    from llm2vec_hf.training.e5 import convert

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = word_source()
    paths = {"echo_data": out / "echo-data", "supervised": out / "train.jsonl", "wiki": out / "wiki.txt",
             "corpus": out / "corpus.txt"}
    write_e5_like(paths["echo_data"], words, records_per_dataset, rng)
    convert(str(paths["echo_data"]), str(paths["supervised"]))
    write_wiki(paths["wiki"], words, wiki_lines, rng)
    write_corpus(paths["corpus"], words, corpus_paragraphs, rng)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--records-per-dataset", type=int, default=64)
    parser.add_argument("--wiki-lines", type=int, default=4000)
    parser.add_argument("--corpus-paragraphs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in prepare(args.out, args.records_per_dataset, args.wiki_lines, args.corpus_paragraphs,
                              args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
