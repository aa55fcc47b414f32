"""The assets shipped inside the package for the offline demo: the embedded default model and the demo data.

- ``default_model/``: a small Llama-architecture causal LM pretrained by ``scripts/pretrain_default.py``;
- ``data/``: WordNet 3.0 / pydoc derived files written by ``scripts/build_demo_data.py``
  (``wordnet_train.jsonl``, ``wordnet_eval.jsonl``, ``unlabeled.txt``).

Both folders are package data, so a non-editable install carries them.
"""

from __future__ import annotations

from pathlib import Path

from ..loading.json_files import read_jsonl

_HERE = Path(__file__).resolve().parent

#: The instruction the demo's retrieval task uses for queries (and that the training pairs carry).
WORDNET_INSTRUCTION = "Given a word and its definition, retrieve a sentence that uses the word in that sense"

DEMO_FILES = ("wordnet_train.jsonl", "wordnet_eval.jsonl", "unlabeled.txt")


def default_model_path() -> Path:
    """The folder of the embedded default model (config.json, model.safetensors, tokenizer files)."""
    path = _HERE / "default_model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the embedded default model is missing from {path}; run scripts/pretrain_default.py")
    return path


def demo_data_path(name: str = "") -> Path:
    """A file of the demo data (one of `DEMO_FILES`, or README.md), or the folder itself when ``name`` is empty."""
    folder = _HERE / "data"
    if not name:
        return folder
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"no demo data file {name!r} in {folder} (have: {', '.join(DEMO_FILES)})")
    return path


def load_eval_task() -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """The held-out retrieval task: ``(queries, docs, qrels)``.

    ``queries`` maps query id -> WordNet definition, ``docs`` maps doc id -> example sentence, ``qrels`` maps
    query id -> ``{doc_id: 1}`` (one relevant document per query). Queries are encoded with
    `WORDNET_INSTRUCTION`, documents plain. Docs are returned sorted by id.
    """
    rows = read_jsonl(demo_data_path("wordnet_eval.jsonl"))
    queries = {row["query_id"]: row["query"] for row in rows}
    docs = dict(sorted((row["doc_id"], row["doc"]) for row in rows))
    qrels = {row["query_id"]: {row["doc_id"]: 1} for row in rows}
    return queries, docs, qrels


def load_pairs(limit: int | None = None) -> list[dict]:
    """Supervised training rows: dicts with ``query``, ``positive``, ``negative`` (a hard negative where one
    exists), ``instruction`` and ``dataset``. ``limit`` keeps the first rows (the file is already shuffled)."""
    rows = read_jsonl(demo_data_path("wordnet_train.jsonl"))
    return rows if limit is None else rows[:limit]


def unlabeled_texts(limit: int | None = None) -> list[str]:
    """Unlabeled English texts for MNTP / SimCSE, one per line of ``unlabeled.txt`` (already shuffled)."""
    lines = demo_data_path("unlabeled.txt").read_text(encoding="utf-8").splitlines()
    texts = [line for line in lines if line.strip()]
    return texts if limit is None else texts[:limit]
