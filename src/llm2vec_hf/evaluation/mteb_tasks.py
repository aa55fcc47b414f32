"""MTEB evaluation of an llm2vec-hf checkpoint through mteb 2.x (the optional extra ``[eval]``).

- ``LLM2VecEncoder`` is an mteb encoder around the checkpoint's ``SentenceTransformer``: for each task and
  side it picks the instruction (``instructions.resolve_instruction``) and passes it as the sentence-transformers
  prompt, which the checkpoint's LLM2Vec module reads as the instruction (excluded from pooling).
- ``local_task(folder)`` defines an mteb task from small local files (retrieval or STS; see ``LOCAL_TASK_FORMAT``).
- ``run_mteb`` runs the tasks with ``mteb.evaluate`` and writes mteb's results folder
  (``OUTPUT/results/<model>/<revision>/<Task>.json`` and ``model_meta.json``, what ``mteb.ResultCache`` reads).
- ``model_index_entries`` turns results into model-card ``model-index`` entries (``huggingface_hub.EvalResult``
  keyword dicts).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import LLM2VecError
from ..json_files import read_json, read_jsonl
from .instructions import MTEB_INSTRUCTIONS, resolve_instruction

logger = logging.getLogger(__name__)

#: The tested mteb release line; setup.cfg's ``[eval]`` extra pins the same range.
MTEB_REQUIREMENT = "mteb>=2.26,<3"
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
            f"MTEB evaluation needs mteb 2.x: pip install 'llm2vec-hf[eval]' (that is, {MTEB_REQUIREMENT!r})"
        ) from error
    major = int(mteb.__version__.split(".")[0])
    if major != 2:
        raise LLM2VecError(f"mteb {mteb.__version__} is installed; llm2vec-hf eval needs {MTEB_REQUIREMENT!r}")
    return mteb


# --------------------------------------------------------------------------------------------------- local tasks


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
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
                        "relevant_docs": _read_qrels(folder / "qrels.tsv"),
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
    except Exception:  # renamed or removed in some mteb 2.x: fall back to the instruction set's task list
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


# ------------------------------------------------------------------------------------------------------ encoder


def _mteb_encoder_base():
    from mteb.models.abs_encoder import AbsEncoder

    return AbsEncoder


def make_encoder(model, name: str, revision: str | None = None, use_instructions: bool = True,
                 instructions: dict[str, str] | None = None, prompts: dict[str, str] | None = None):
    """An mteb encoder (``AbsEncoder``) for a loaded ``SentenceTransformer`` of an llm2vec-hf checkpoint.

    ``prompts``: named prompts to look up per task (default: the checkpoint's, ``model.prompts``);
    ``instructions``: {task name (or ``task-query`` / ``task-document``): instruction} that take precedence over
    everything else (``--instructions FILE.json``); the shipped set ``MTEB_INSTRUCTIONS`` stays the fallback.
    """
    require_mteb()
    from mteb.models.model_meta import ModelMeta

    AbsEncoder = _mteb_encoder_base()

    class LLM2VecEncoder(AbsEncoder):
        """Encodes with the checkpoint's SentenceTransformer; the per-task instruction is the ST prompt."""

        def __init__(self):
            self.model = model
            self.checkpoint_prompts = dict(model.prompts if prompts is None else prompts)
            self.overrides = dict(instructions or {})
            self.use_instructions = use_instructions
            #: task -> side -> (instruction, source): what was used, for the summary and results.
            self.used: dict[str, dict[str | None, tuple[str, str]]] = {}
            meta = ModelMeta.from_sentence_transformer_model(model, fill_missing=None)  # None: no deprecation warning
            self.mteb_model_meta = meta.model_copy(
                update={"name": name, "revision": revision or "no_revision_available", "loader": None,
                        "use_instructions": use_instructions}
            )

        def instruction_for(self, task_metadata, prompt_type) -> str:
            side = prompt_type.value if prompt_type is not None else None
            instruction, source = resolve_instruction(
                task_metadata.name,
                task_metadata.type,
                side,
                checkpoint_prompts=self.checkpoint_prompts,
                task_prompt=task_metadata.prompt,
                use_instructions=self.use_instructions,
                default=_abstask_prompt(task_metadata.name),
                overrides=self.overrides,
            )
            self.used.setdefault(task_metadata.name, {})[side] = (instruction, source)
            return instruction

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            instruction = self.instruction_for(task_metadata, prompt_type)
            texts = [text for batch in inputs for text in batch["text"]]
            return self.model.encode(
                texts,
                prompt=instruction or None,
                batch_size=kwargs.get("batch_size", 32),
                show_progress_bar=kwargs.get("show_progress_bar", True),
                convert_to_numpy=True,
            ).astype(np.float32)

        def similarity(self, embeddings1, embeddings2):
            return self.model.similarity(embeddings1, embeddings2)

        def similarity_pairwise(self, embeddings1, embeddings2):
            return self.model.similarity_pairwise(embeddings1, embeddings2)

    return LLM2VecEncoder()


def _abstask_prompt(task_name: str) -> str:
    """mteb's generic prompt for the task's type ("" where this mteb has none or cannot place the task)."""
    try:
        from mteb.abstasks.abstask import get_abstask_prompt

        return get_abstask_prompt(task_name) or ""
    except Exception:
        return ""


def load_sentence_transformer(model_dir: str, device: str | None = None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir, trust_remote_code=True, device=device)


def _model_card_module():
    """The model-card module (another part of the package), or None in a version without it."""
    try:
        from .. import model_card
    except ImportError:
        return None
    return model_card


def model_name_for(model_dir: str) -> str:
    """The model's name in results: its Hub repo id where it has one, else its folder name."""
    model_card = _model_card_module()
    repo_id = model_card.hub_repo_id(model_dir) if hasattr(model_card, "hub_repo_id") else None
    return repo_id or Path(model_dir).resolve().name


# ------------------------------------------------------------------------------------------------------- running


def run_mteb(
    model_dir: str,
    task_names: Sequence[str],
    output_dir: str | os.PathLike,
    batch_size: int = 32,
    use_instructions: bool = True,
    instructions: dict[str, str] | None = None,
    languages: Sequence[str] | None = ("eng",),
    device: str | None = None,
    show_progress_bar: bool = True,
    model=None,
    prediction_folder: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Evaluates the checkpoint on ``task_names``; writes mteb's results folder under ``output_dir``.

    ``prediction_folder``: where mteb saves each task's raw predictions (retrieval: the ranked run per query).

    Returns ``{"rows": [...], "task_results": [mteb.TaskResult], "tasks": [...], "instructions": {...},
    "results_dir": Path}``; each row is ``{task, type, split, subset, metric, score}`` (the task's main score).
    """
    mteb = require_mteb()
    tasks = get_tasks(task_names, languages)
    model = model if model is not None else load_sentence_transformer(model_dir, device)
    encoder = make_encoder(model, model_name_for(model_dir), use_instructions=use_instructions,
                           instructions=instructions)
    cache = mteb.ResultCache(cache_path=str(output_dir))
    result = mteb.evaluate(
        encoder,
        tasks,
        cache=cache,
        overwrite_strategy="always",
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar},
        show_progress_bar=show_progress_bar,
        raise_error=True,
        prediction_folder=prediction_folder,
    )
    meta = encoder.mteb_model_meta
    results_dir = Path(output_dir) / "results" / meta.model_name_as_path() / meta.revision
    return {
        "rows": summary_rows(result.task_results, tasks),
        "task_results": list(result.task_results),
        "tasks": tasks,
        "instructions": {task: {side or "all": list(v) for side, v in sides.items()}
                         for task, sides in encoder.used.items()},
        "results_dir": results_dir,
    }


def summary_rows(task_results: Iterable, tasks: Sequence) -> list[dict[str, Any]]:
    """One row per (task, split, subset) with the task's main score."""
    types = {task.metadata.name: task.metadata.type for task in tasks}
    rows = []
    for task_result in task_results:
        for split, entries in task_result.scores.items():
            for entry in entries:
                rows.append(
                    {
                        "task": task_result.task_name,
                        "type": types.get(task_result.task_name, ""),
                        "split": split,
                        "subset": entry.get("hf_subset", "default"),
                        "metric": _main_score_name(task_result, tasks),
                        "score": float(entry["main_score"]),
                    }
                )
    return rows


def _main_score_name(task_result, tasks) -> str:
    for task in tasks:
        if task.metadata.name == task_result.task_name:
            return task.metadata.main_score
    return "main_score"


def model_index_entries(rows: Iterable[dict[str, Any]], tasks: Sequence = ()) -> list[dict[str, Any]]:
    """``huggingface_hub.EvalResult`` keyword dicts for the model card's ``model-index``, one per summary row.

    MTEB rows name the dataset as mteb does (``dataset_type`` = the dataset's Hub path, name ``MTEB <Task>``);
    word-probe rows (``type`` "WordProbe") are token-classification results.
    """
    datasets = {task.metadata.name: task.metadata.dataset for task in tasks}
    entries = []
    for row in rows:
        if row.get("type") == "WordProbe":
            probe = row["task"].split(":", 1)[-1]
            dataset = row.get("dataset", "conll2003")
            entries.append(
                {
                    "task_type": "token-classification",
                    "task_name": f"Word-level probe ({row['task']})",
                    "dataset_type": dataset,
                    # the probe is part of the name: cards merge results by (task, dataset, split, metric)
                    "dataset_name": f"{dataset} ({probe})",
                    "dataset_config": probe,
                    "dataset_split": row["split"],
                    "metric_type": row["metric"],
                    "metric_name": row["metric"],
                    "metric_value": round(float(row["score"]), 6),
                }
            )
            continue
        dataset = datasets.get(row["task"], {})
        entry = {
            "task_type": row["type"],
            "task_name": row["type"],
            "dataset_type": dataset.get("path", row["task"]),
            "dataset_name": f"MTEB {row['task']}",
            "dataset_config": row["subset"],
            "dataset_split": row["split"],
            "metric_type": row["metric"],
            "metric_name": row["metric"],
            "metric_value": round(float(row["score"]), 6),
            "source_name": "MTEB",
            "source_url": "https://github.com/embeddings-benchmark/mteb",
        }
        if dataset.get("revision"):
            entry["dataset_revision"] = dataset["revision"]
        entries.append(entry)
    return entries


def write_model_card_results(model_dir: str, entries: list[dict[str, Any]]) -> bool:
    """Adds ``entries`` to the checkpoint's model card (``model_card.add_evaluation_results``); False if unavailable."""
    add = getattr(_model_card_module(), "add_evaluation_results", None)
    if add is None or not os.path.isfile(os.path.join(model_dir, "README.md")):
        return False
    add(model_dir, entries)
    return True
