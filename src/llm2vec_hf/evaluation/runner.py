"""Running MTEB tasks on an llm2vec-hf checkpoint with mteb 2.x's own encoder classes.

The checkpoint's ``SentenceTransformer`` reads the sentence-transformers prompt as LLM2Vec's instruction and
pools only the text's tokens (modeling/sentence_transformers_llm2vec.py), so mteb's
``InstructSentenceTransformerModel``, which passes each task's instruction as that prompt, encodes exactly as
LLM2Vec does. Which instruction each task and side gets is decided up front by
``instructions.resolve_instruction`` (LLM2Vec's protocol) and handed to mteb as its prompts dict.

``run_mteb`` runs the tasks with ``mteb.evaluate`` and writes mteb's results folder
(``OUTPUT/results/<model>/<revision>/<Task>.json`` and ``model_meta.json``, what ``mteb.ResultCache`` reads).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..checkpoint.model_card import hub_repo_id
from ..errors import LLM2VecError
from .instructions import ASYMMETRIC_TYPES, resolve_instruction
from .tasks import get_tasks, require_mteb

logger = logging.getLogger(__name__)


@dataclass
class TaskInstructions:
    """The instruction of each side of one task, and where each came from."""

    task: str
    asymmetric: bool
    query: tuple[str, str]  # (instruction, source); for symmetric tasks: every text's
    document: tuple[str, str] | None = None  # asymmetric tasks only

    def used(self) -> dict[str | None, tuple[str, str]]:
        """{side: (instruction, source)}, side None for symmetric tasks (as mteb's prompt type)."""
        if not self.asymmetric:
            return {None: self.query}
        return {"query": self.query, "document": self.document}


def encoded_tasks(tasks: Sequence) -> list:
    """The tasks whose names reach the encoder: an aggregate task (CQADupstack) encodes as its sub-tasks."""
    return [sub for task in tasks for sub in (getattr(task.metadata, "tasks", None) or [task])]


def task_instructions(tasks: Sequence, checkpoint_prompts: dict[str, str] | None, use_instructions: bool = True,
                      overrides: dict[str, str] | None = None) -> dict[str, TaskInstructions]:
    """LLM2Vec's instruction for every side of every task (``resolve_instruction``), by task name."""
    resolved = {}
    for task in encoded_tasks(tasks):
        metadata = task.metadata
        asymmetric = metadata.type in ASYMMETRIC_TYPES

        def resolve(side):
            return resolve_instruction(
                metadata.name, metadata.type, side, checkpoint_prompts=checkpoint_prompts,
                task_prompt=metadata.prompt, use_instructions=use_instructions, default=_abstask_prompt(metadata.name),
                overrides=overrides,
            )

        if asymmetric:
            resolved[metadata.name] = TaskInstructions(metadata.name, True, resolve("query"), resolve("document"))
        else:
            resolved[metadata.name] = TaskInstructions(metadata.name, False, resolve(None))
    return resolved


def _abstask_prompt(task_name: str) -> str:
    """mteb's generic prompt for the task's type ("" where this mteb has none or cannot place the task)."""
    try:
        from mteb.abstasks.abstask import get_abstask_prompt

        return get_abstask_prompt(task_name) or ""
    except Exception:  # a local task: not in mteb's registry
        return ""


def mteb_encoders(model, meta, instructions: dict[str, TaskInstructions]) -> list[tuple[Any, list[str]]]:
    """mteb encoders around ``model``'s modules and the task names each encodes: ``[(encoder, [task, ...])]``.

    mteb's ``InstructSentenceTransformerModel`` looks instructions up by task name, gives documents of
    retrieval tasks none (``apply_instruction_to_passages=False``), and replaces an empty instruction by a
    generic one. So: one encoder for every task with an instruction and bare documents; one per task whose
    documents have their own instruction (looked up by side); mteb's plain ``SentenceTransformerEncoderWrapper``
    for tasks encoded bare (``--no-instructions``).
    """
    from mteb.models.abs_encoder import PromptSource
    from mteb.models.instruct_wrapper import InstructSentenceTransformerModel
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    def instruct(**kwargs):
        # A SentenceTransformer over the already loaded modules (no second load), without the checkpoint's
        # named prompts, so that only the instruction given here is applied.
        encoder = InstructSentenceTransformerModel(
            None, None, instruction_template="{instruction}", modules=list(model), device=str(model.device),
            similarity_fn_name=model.similarity_fn_name, **kwargs,
        )
        encoder.mteb_model_meta = meta
        return encoder

    shared, own_documents, bare = {}, {}, []
    for name, resolved in instructions.items():
        query, document = resolved.query[0], (resolved.document or ("", ""))[0]
        if not query and not document:
            bare.append(name)
        elif not query:
            raise LLM2VecError(f"{name}: documents have an instruction ({resolved.document[1]}) but queries none; "
                               "llm2vec-hf eval cannot encode that through mteb: give the queries one as well")
        elif document:
            own_documents[name] = {"query": query, "document": document}
        else:
            shared[name] = query
    encoders = []
    if shared:
        encoders.append((instruct(prompts_dict=shared, apply_instruction_to_passages=False), sorted(shared)))
    for name, prompts in own_documents.items():
        encoders.append((instruct(prompts_dict=prompts, prompt_priority=[PromptSource.ENCODE_TYPE_PROMPT],
                                  apply_instruction_to_passages=True), [name]))
    if bare:
        from sentence_transformers import SentenceTransformer

        plain = SentenceTransformerEncoderWrapper(
            SentenceTransformer(modules=list(model), device=str(model.device),
                                similarity_fn_name=model.similarity_fn_name)
        )
        plain.mteb_model_meta = meta
        encoders.append((plain, sorted(bare)))
    return encoders


def model_meta(model, name: str, revision: str | None = None, use_instructions: bool = True):
    """mteb's ``ModelMeta`` of the checkpoint, under ``name`` (the results folder is named after it)."""
    from mteb.models.model_meta import ModelMeta

    meta = ModelMeta.from_sentence_transformer_model(model, fill_missing=None)  # None: no deprecation warning
    return meta.model_copy(update={"name": name, "revision": revision or "no_revision_available", "loader": None,
                                   "use_instructions": use_instructions})


def load_sentence_transformer(model_dir: str, device: str | None = None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir, trust_remote_code=True, device=device)


def model_name_for(model_dir: str) -> str:
    """The model's name in results: its Hub repo id where it has one, else its folder name."""
    return hub_repo_id(model_dir) or Path(model_dir).resolve().name


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

    ``instructions``: {task name (or ``task-query`` / ``task-document``): instruction} that take precedence over
    the checkpoint's named prompts and the shipped set (``--instructions FILE.json``).
    ``prediction_folder``: where mteb saves each task's raw predictions (retrieval: the ranked run per query).

    Returns ``{"rows": [...], "task_results": [mteb.TaskResult], "tasks": [...], "instructions": {...},
    "results_dir": Path}``; each row is ``{task, type, split, subset, metric, score}`` (the task's main score).
    """
    mteb = require_mteb()
    tasks = get_tasks(task_names, languages)
    model = model if model is not None else load_sentence_transformer(model_dir, device)
    meta = model_meta(model, model_name_for(model_dir), use_instructions=use_instructions)
    resolved = task_instructions(tasks, dict(model.prompts), use_instructions, dict(instructions or {}))
    cache = mteb.ResultCache(cache_path=str(output_dir))
    encoders = mteb_encoders(model, meta, resolved)
    for task in tasks:  # an aggregate task (CQADupstack) runs under one encoder, so its sub-tasks must share it
        subtasks = {sub.metadata.name for sub in encoded_tasks([task])}
        if sum(bool(subtasks & set(names)) for _, names in encoders) > 1:
            raise LLM2VecError(f"{task.metadata.name}: its sub-tasks need different instructions per side; give "
                               "them the same document instruction")
    task_results = []
    for encoder, names in encoders:
        selected = [task for task in tasks if {sub.metadata.name for sub in encoded_tasks([task])} & set(names)]
        result = mteb.evaluate(
            encoder,
            selected,
            cache=cache,
            overwrite_strategy="always",
            encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar},
            show_progress_bar=show_progress_bar,
            raise_error=True,
            prediction_folder=prediction_folder,
        )
        task_results.extend(result.task_results)
    order = {task.metadata.name: number for number, task in enumerate(tasks)}
    task_results.sort(key=lambda result: order.get(result.task_name, len(order)))
    return {
        "rows": summary_rows(task_results, tasks),
        "task_results": task_results,
        "tasks": tasks,
        "instructions": {task: {side or "all": list(value) for side, value in sides.used().items()}
                         for task, sides in resolved.items()},
        "results_dir": Path(output_dir) / "results" / meta.model_name_as_path() / meta.revision,
    }


def summary_rows(task_results: Iterable, tasks: Sequence) -> list[dict[str, Any]]:
    """One row per (task, split, subset) with the task's main score."""
    types = {task.metadata.name: task.metadata.type for task in tasks}
    main_scores = {task.metadata.name: task.metadata.main_score for task in tasks}
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
                        "metric": main_scores.get(task_result.task_name, "main_score"),
                        "score": float(entry["main_score"]),
                    }
                )
    return rows
