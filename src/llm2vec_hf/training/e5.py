"""Convert the public E5 training mix (the echo-data layout) to the supervised training JSONL.

    python -m llm2vec_hf.commands.e5 cache/echo-data cache/echo-data/train.jsonl

The echo-data folder holds one ``{dataset}.jsonl`` per dataset, each line ``{"query", "positive", "negative"}``.
Each output record gets the dataset's instruction as the official ``E5Data`` gives it: the dataset's instruction
string followed by ``"; "``; for ``allnli`` and ``quora_duplicates`` the instruction alternates per record
between their two strings (the record's line number in its file, even: the first, odd: the second). Documents
(positive, negative) get no instruction: the official branch that would give them one tests for dataset names
(``allnli_split2``, ``quora_duplicates_split1/2``) that the mix does not have.
"""

from __future__ import annotations

import json
import os

from .data import DataError

#: The instruction of each dataset of the E5 mix, as the official llm2vec E5Data.py has them.
E5_INSTRUCTIONS: dict[str, str | tuple[str, str]] = {
    "allnli": (
        "Given a premise, retrieve a hypothesis that is entailed by the premise",
        "Retrieve semantically similar text",
    ),
    "dureader": "Given a Chinese search query, retrieve web passages that answer the question",
    "eli5_question_answer": "Provided a user question, retrieve the highest voted answers on Reddit ELI5 forum",
    "fever": "Given a claim, retrieve documents that support or refute the claim",
    "hotpot_qa": "Given a multi-hop question, retrieve documents that can help answer the question",
    "miracl": "Given a question, retrieve Wikipedia passages that answer the question",
    "mrtydi": "Given a question, retrieve Wikipedia passages that answer the question",
    "msmarco_passage": "Given a web search query, retrieve relevant passages that answer the query",
    "msmarco_document": "Given a web search query, retrieve relevant documents that answer the query",
    "nq": "Given a question, retrieve Wikipedia passages that answer the question",
    "quora_duplicates": (
        "Given a question, retrieve questions that are semantically equivalent to the given question",
        "Find questions that have the same meaning as the input question",
    ),
    "squad": "Retrieve Wikipedia passages that answer the question",
    "t2ranking": "Given a Chinese search query, retrieve web passages that answer the question",
    "trivia_qa": "Retrieve Wikipedia passages that answer the question",
}

#: What E5Data puts between the instruction and the query.
INSTRUCTION_SUFFIX = "; "


def instruction_for(dataset: str, line_index: int) -> str:
    """The instruction of record ``line_index`` (0-based, in its file) of ``dataset``, suffix included."""
    instruction = E5_INSTRUCTIONS[dataset]
    if not isinstance(instruction, str):
        instruction = instruction[line_index % 2]
    return instruction + INSTRUCTION_SUFFIX


def convert(echo_dir: str, output: str, datasets: list[str] | None = None) -> dict[str, int]:
    """Writes the training JSONL; returns the number of records per dataset. Every dataset file must exist."""
    names = list(datasets or E5_INSTRUCTIONS)
    unknown = [n for n in names if n not in E5_INSTRUCTIONS]
    if unknown:
        raise DataError(f"Unknown E5 dataset(s) {unknown}; known: {', '.join(E5_INSTRUCTIONS)}")
    missing = [n for n in names if not os.path.isfile(os.path.join(echo_dir, f"{n}.jsonl"))]
    if missing:
        raise DataError(f"{echo_dir} lacks {', '.join(f'{n}.jsonl' for n in missing)} (the E5 mix has one file "
                        f"per dataset)")
    counts: dict[str, int] = {}
    partial = output + ".partial"
    with open(partial, "w", encoding="utf-8") as out:
        for name in names:
            path = os.path.join(echo_dir, f"{name}.jsonl")
            with open(path, encoding="utf-8") as handle:
                for index, line in enumerate(handle):
                    try:
                        sample = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise DataError(f"{path}, line {index + 1}: not JSON ({error.msg})") from None
                    if not isinstance(sample, dict) or not all(
                            isinstance(sample.get(k), str) for k in ("query", "positive", "negative")):
                        raise DataError(f"{path}, line {index + 1}: needs string query, positive and negative")
                    record = {"query": sample["query"], "positive": sample["positive"],
                              "negative": sample["negative"], "instruction": instruction_for(name, index),
                              "dataset": name}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    counts[name] = counts.get(name, 0) + 1
    os.replace(partial, output)
    return counts
