#!/usr/bin/env python
"""Builds the offline demo data in ``src/llm2vec_hf/demo/data/`` from WordNet 3.0 and CPython's pydoc topics.

Needs the WordNet 3.0 database files (Debian: ``apt-get install wordnet-base``, which puts them under
``/usr/share/wordnet``). Deterministic: the same WordNet files and Python give byte-identical outputs.

Outputs (see ``src/llm2vec_hf/demo/data/README.md``):

- ``wordnet_eval.jsonl``: held-out retrieval task, one definition -> one example sentence per synset;
- ``wordnet_train.jsonl``: supervised (query, positive, hard negative) triples from other synsets;
- ``unlabeled.txt``: glosses of training-split synsets and pydoc paragraphs, one text a line.

No text of an evaluation synset (definition or example) occurs in the training pairs or in ``unlabeled.txt``.

    python scripts/build_demo_data.py [--wordnet /usr/share/wordnet] [--output src/llm2vec_hf/demo/data]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

INSTRUCTION = "Given a word and its definition, retrieve a sentence that uses the word in that sense"
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
SEED = 0
N_EVAL = 1000
N_TRAIN = 4000
#: Cap on the bytes of WordNet glosses in unlabeled.txt (the folder must stay under 3 MB in all).
GLOSS_BYTES = 1_250_000
MIN_EXAMPLE_WORDS = 4
MIN_DEFINITION_WORDS = 3


@dataclass
class Synset:
    key: str  # "<pos>:<offset>", e.g. "n:00217593"
    pos: str
    lemmas: list[str]
    definition: str
    examples: list[str] = field(default_factory=list)


def _clean(text: str) -> str:
    return " ".join(text.split())


def parse_data_file(path: Path) -> list[Synset]:
    """Synsets of one ``data.<pos>`` file (WordNet's wndb(5) format), in file order."""
    synsets = []
    with open(path, encoding="latin-1") as handle:
        for line in handle:
            if line.startswith(" "):  # the licence header
                continue
            fields, _, gloss = line.partition(" | ")
            parts = fields.split()
            offset, ss_type, w_cnt = parts[0], parts[2], int(parts[3], 16)
            lemmas = []
            for i in range(w_cnt):
                word = parts[4 + 2 * i]
                word = re.sub(r"\([a-z]+\)$", "", word).replace("_", " ")  # adjective markers: long(a)
                if word.lower() not in (w.lower() for w in lemmas):
                    lemmas.append(word)
            gloss = gloss.strip()
            examples = [_clean(e) for e in re.findall(r'"([^"]*)"', gloss)]
            definition = _clean(gloss.split('"', 1)[0]).rstrip(" ;:,")
            pos = "a" if ss_type == "s" else ss_type
            synsets.append(Synset(f"{pos}:{offset}", ss_type, lemmas, definition, [e for e in examples if e]))
    return synsets


def load_wordnet(folder: Path) -> list[Synset]:
    synsets = []
    for name in ("noun", "verb", "adj", "adv"):
        synsets.extend(parse_data_file(folder / f"data.{name}"))
    return synsets


def usable_examples(synset: Synset) -> list[str]:
    return [e for e in synset.examples if len(e.split()) >= MIN_EXAMPLE_WORDS]


def headed_definition(synset: Synset) -> str:
    """A query: the synset's words, part of speech and definition, e.g. ``sail, navigate (verb): traverse or
    travel on (a body of water)``. The words give queries and documents shared surface signal, the definition
    says which sense is meant (hard negatives are other senses of the same words)."""
    return f"{', '.join(synset.lemmas)} ({POS_NAMES[synset.pos]}): {synset.definition}"


def gloss_line(synset: Synset) -> str:
    """One line of ``unlabeled.txt``: the headwords, the definition and the examples of a synset."""
    text = f"{', '.join(synset.lemmas)} ({POS_NAMES[synset.pos]}): {synset.definition}."
    if synset.examples:
        text += " For example: " + "; ".join(f'"{e}"' for e in synset.examples) + "."
    return text


def build(wordnet: Path) -> tuple[list[dict], list[dict], list[str], dict]:
    from llm2vec_hf.training.tiny_model import english_corpus

    rng = random.Random(SEED)
    synsets = load_wordnet(wordnet)
    candidates = [
        s for s in synsets if len(s.definition.split()) >= MIN_DEFINITION_WORDS and usable_examples(s)
    ]
    # How often each definition/example text occurs in the whole of WordNet: an evaluation text must be unique,
    # so that it can't leak through another synset that shares it.
    counts: dict[str, int] = defaultdict(int)
    for s in synsets:
        for text in {s.definition.lower(), *(e.lower() for e in s.examples)}:
            counts[text] += 1

    order = sorted(candidates, key=lambda s: s.key)
    rng.shuffle(order)

    eval_synsets: list[Synset] = []
    eval_docs: list[str] = []
    def pick(candidates_in_order, wanted: int) -> None:
        for s in candidates_in_order:
            if len(eval_synsets) == wanted:
                return
            if counts[s.definition.lower()] > 1 or s.key in {e.key for e in eval_synsets}:
                continue
            unique = [e for e in usable_examples(s) if counts[e.lower()] == 1]
            if unique:
                eval_synsets.append(s)
                eval_docs.append(rng.choice(unique))

    # Half from the front of the shuffled order, half from its back: unlabeled.txt (the embedded model's
    # pretraining text) takes its glosses from the front, after the evaluation synsets, and never reaches the back.
    pick(order, N_EVAL // 2)
    pick(order[::-1], N_EVAL)
    eval_keys = {s.key for s in eval_synsets}
    eval_texts = {s.definition.lower() for s in eval_synsets} | {e.lower() for s in eval_synsets for e in s.examples}

    # Train split: every other synset. Hard negatives: other senses of the synset's words.
    train_split = [s for s in synsets if s.key not in eval_keys]
    by_lemma: dict[str, list[Synset]] = defaultdict(list)
    for s in train_split:
        if usable_examples(s):
            for lemma in s.lemmas:
                by_lemma[lemma.lower()].append(s)
    train_pool = [s for s in order if s.key not in eval_keys]
    with_examples = [s for s in train_split if usable_examples(s)]

    train_rows = []
    hard = 0
    for s in train_pool[:N_TRAIN]:
        positive = rng.choice(usable_examples(s))
        others = sorted(
            {o.key: o for lemma in s.lemmas for o in by_lemma[lemma.lower()] if o.key != s.key}.values(),
            key=lambda o: o.key,
        )
        if others:
            negative_synset = rng.choice(others)
            hard += 1
        else:
            negative_synset = s
            while negative_synset.key == s.key:
                negative_synset = rng.choice(with_examples)
        negative = rng.choice(usable_examples(negative_synset))
        if negative.lower() == positive.lower():
            negative = next((e for e in usable_examples(negative_synset) if e.lower() != positive.lower()), None)
            if negative is None:
                continue
        train_rows.append(
            {"query": headed_definition(s), "positive": positive, "negative": negative, "instruction": INSTRUCTION,
             "dataset": "wordnet"}
        )

    # unlabeled.txt: glosses of the training pairs' synsets first, then of further train-split synsets (in the
    # shuffled order) up to GLOSS_BYTES, then the pydoc paragraphs; shuffled together.
    used = train_pool[:N_TRAIN]
    used_keys = {s.key for s in used}
    candidate_keys = {s.key for s in candidates}
    rest = train_pool[N_TRAIN:] + sorted(
        (s for s in train_split if s.key not in candidate_keys), key=lambda s: s.key
    )
    gloss_lines, size = [], 0
    for s in used + rest:
        line = gloss_line(s)
        if size + len(line) + 1 > GLOSS_BYTES and s.key not in used_keys:
            break
        gloss_lines.append(line)
        size += len(line) + 1
    pydoc_lines = list(english_corpus())
    unlabeled = gloss_lines + pydoc_lines
    rng.shuffle(unlabeled)
    # Belt and braces: drop any unlabeled line that contains an evaluation text.
    unlabeled = [line for line in unlabeled if not any(t in line.lower() for t in _eval_needles(eval_texts))]

    eval_rows = [
        {"query_id": f"q{i:04d}", "query": headed_definition(s), "doc_id": f"d{i:04d}", "doc": doc, "synset": s.key}
        for i, (s, doc) in enumerate(zip(eval_synsets, eval_docs))
    ]
    # Docs are listed in a shuffled order relative to queries, so that ids carry no positional hint.
    doc_perm = list(range(len(eval_rows)))
    rng.shuffle(doc_perm)
    for row, j in zip(eval_rows, doc_perm):
        row["doc_id"] = f"d{j:04d}"

    stats = {
        "synsets": len(synsets),
        "candidates": len(candidates),
        "eval": len(eval_rows),
        "train": len(train_rows),
        "train_hard_negatives": hard,
        "unlabeled_gloss_lines": len(gloss_lines),
        "unlabeled_pydoc_lines": len(pydoc_lines),
        "unlabeled_lines": len(unlabeled),
    }
    return train_rows, eval_rows, unlabeled, stats


_NEEDLES: tuple[str, ...] | None = None


def _eval_needles(eval_texts: set[str]) -> tuple[str, ...]:
    global _NEEDLES
    if _NEEDLES is None:
        _NEEDLES = tuple(sorted(t for t in eval_texts if len(t.split()) >= 3))
    return _NEEDLES


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--output", type=Path, default=ROOT / "src" / "llm2vec_hf" / "demo" / "data")
    args = parser.parse_args(argv)
    if not (args.wordnet / "data.noun").is_file():
        parser.error(f"no WordNet 3.0 database under {args.wordnet} (Debian: apt-get install wordnet-base)")
    train_rows, eval_rows, unlabeled, stats = build(args.wordnet)
    args.output.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.output / "wordnet_train.jsonl", train_rows)
    write_jsonl(args.output / "wordnet_eval.jsonl", eval_rows)
    (args.output / "unlabeled.txt").write_text("\n".join(unlabeled) + "\n", encoding="utf-8", newline="\n")
    print(json.dumps(stats, indent=1))
    for name in ("wordnet_train.jsonl", "wordnet_eval.jsonl", "unlabeled.txt"):
        print(f"{name}: {(args.output / name).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
