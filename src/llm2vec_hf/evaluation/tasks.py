"""The mteb tasks an evaluation runs: mteb task names, LLM2Vec's English set, and tasks read from local files.

``get_tasks(names)`` turns ``--tasks`` values into mteb 2.x task objects (the optional extra ``[eval]``);
``local_task(folder)`` defines an mteb retrieval or STS task from small local files (``LOCAL_TASK_FORMAT``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from packaging.version import Version

from ..errors import LLM2VecError
from ..loading.json_files import read_json, read_jsonl
from .instructions import MTEB_INSTRUCTIONS

logger = logging.getLogger(__name__)

#: The mteb the evaluation code needs; setup.cfg's ``[eval]`` extra declares the same.
MTEB_REQUIREMENT = "mteb>=2.26"
#: ``--tasks`` alias for the 56 English MTEB tasks LLM2Vec reported: mteb's ``MTEB(eng, v1)`` benchmark.
ALL_LLM2VEC_TASKS = "llm2vec-mteb"
ENGLISH_BENCHMARK = "MTEB(eng, v1)"

LOCAL_TASK_FORMAT = """\
A local task is a folder with task.json and data files:
  task.json   {"name": "MyTask", "type": "Retrieval" | "STS", "instruction": "...", "split": "test",
               "min_score": 0, "max_score": 5 (STS), "description": "..."}
  Retrieval:  corpus.jsonl  ({"id", "text", optional "title"} per line)
              queries.jsonl ({"id", "text"} per line)
              qrels.tsv     (query-id <TAB> corpus-id <TAB> score; header line optional)
  STS:        pairs.jsonl   ({"sentence1", "sentence2", "score"} per line)"""


def require_mteb():
    try:
        import mteb
    except ImportError as error:
        raise LLM2VecError(
            f"MTEB evaluation needs mteb: pip install 'llm2vec-hf[eval]' (that is, {MTEB_REQUIREMENT!r})"
        ) from error
    if Version(mteb.__version__) < Version(MTEB_REQUIREMENT.removeprefix("mteb>=")):
        raise LLM2VecError(f"mteb {mteb.__version__} is installed; llm2vec-hf eval needs {MTEB_REQUIREMENT!r}")
    return mteb


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            fields = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if number == 0 and fields[-1] in ("score", "relevance"):
                continue  # header
            if len(fields) != 3:
                raise LLM2VecError(f"{path}:{number + 1}: expected query-id<TAB>corpus-id<TAB>score")
            qrels.setdefault(fields[0], {})[fields[1]] = int(float(fields[2]))
    return qrels


def is_local_task(name: str) -> bool:
    return os.path.isfile(os.path.join(name, "task.json"))


def local_task(folder: str | os.PathLike):
    """An mteb task (``AbsTaskRetrieval`` or ``AbsTaskSTS``) whose ``load_data`` reads ``folder``."""
    require_mteb()
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    folder = Path(folder)
    spec = read_json(folder / "task.json")
    if not isinstance(spec, dict):
        raise LLM2VecError(f"{folder}/task.json must be a JSON object ({{\"name\", \"type\", ...}}), "
                           f"got {type(spec).__name__}")
    task_type = spec.get("type")
    name = spec.get("name") or folder.name
    split = spec.get("split", "test")
    instruction = spec.get("instruction")
    common = dict(
        name=name,
        description=spec.get("description", f"Local task read from {folder}."),
        reference=None,
        dataset={"path": str(folder.resolve()), "revision": spec.get("revision", "local")},
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=spec.get("eval_langs", ["eng-Latn"]),
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
    )

    if task_type == "Retrieval":
        metadata = TaskMetadata(
            type="Retrieval",
            main_score=spec.get("main_score", "ndcg_at_10"),
            prompt={"query": instruction} if instruction else None,
            **common,
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            corpus = [
                {"id": str(d["id"]), "text": d["text"], "title": d.get("title", "")}
                for d in read_jsonl(folder / "corpus.jsonl")
            ]
            queries = [{"id": str(q["id"]), "text": q["text"]} for q in read_jsonl(folder / "queries.jsonl")]
            self.dataset = {
                "default": {
                    split: {
                        "corpus": Dataset.from_list(corpus),
                        "queries": Dataset.from_list(queries),
                        "relevant_docs": read_qrels(folder / "qrels.tsv"),
                        "top_ranked": None,
                    }
                }
            }
            self.data_loaded = True

        base = AbsTaskRetrieval
        attributes = {"metadata": metadata, "load_data": load_data}
    elif task_type == "STS":
        metadata = TaskMetadata(type="STS", main_score=spec.get("main_score", "cosine_spearman"),
                                prompt=instruction, **common)

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            rows = read_jsonl(folder / "pairs.jsonl")
            self.dataset = {
                split: Dataset.from_dict(
                    {
                        "sentence1": [r["sentence1"] for r in rows],
                        "sentence2": [r["sentence2"] for r in rows],
                        "score": [float(r["score"]) for r in rows],
                    }
                )
            }
            self.data_loaded = True

        base = AbsTaskSTS
        attributes = {
            "metadata": metadata,
            "load_data": load_data,
            "min_score": spec.get("min_score", 0),
            "max_score": spec.get("max_score", 5),
        }
    else:
        raise LLM2VecError(f"{folder}/task.json: type must be 'Retrieval' or 'STS', not {task_type!r}")
    cls = type(name.replace("-", "_"), (base,), {"__module__": __name__, **attributes})
    return cls()


def _english_mteb_v1(mteb) -> list | None:
    """The tasks of mteb's ``MTEB(eng, v1)`` benchmark (the 56 LLM2Vec reported, with their English subsets and
    splits, CQADupstack as one aggregate task), or None where this mteb does not name it."""
    try:
        return list(mteb.get_benchmark(ENGLISH_BENCHMARK).tasks)
    except Exception:  # an mteb 2.x that does not name the benchmark: fall back to the instruction set's task list
        return None


def get_tasks(names: Sequence[str], languages: Sequence[str] | None = ("eng",)) -> list:
    """mteb tasks for ``names``: mteb task names, local task folders, or ``llm2vec-mteb`` (the LLM2Vec set).

    ``languages`` keeps only those subsets of multilingual tasks (LLM2Vec evaluated the English ones).
    """
    mteb = require_mteb()
    tasks = []
    for name in names:
        if is_local_task(name):
            tasks.append(local_task(name))
            continue
        if name == ALL_LLM2VEC_TASKS:
            benchmark = _english_mteb_v1(mteb)
            if benchmark is not None:
                tasks.extend(benchmark)
                continue
        expanded = list(MTEB_INSTRUCTIONS) if name == ALL_LLM2VEC_TASKS else [name]
        for task_name in expanded:
            try:
                task = mteb.get_task(task_name)
            except KeyError as error:
                if os.path.isdir(task_name):
                    raise LLM2VecError(f"{task_name} has no task.json.\n{LOCAL_TASK_FORMAT}") from error
                raise LLM2VecError(f"unknown MTEB task {task_name!r} (and no local task folder of that name)") from error
            if languages and task.metadata.is_multilingual:
                try:
                    task = mteb.get_task(task_name, languages=list(languages), exclusive_language_filter=True)
                except ValueError as error:
                    raise LLM2VecError(
                        f"{task_name} has no subset in {', '.join(languages)}; pass --all-languages to run all of them"
                    ) from error
            tasks.append(task)
    return tasks
