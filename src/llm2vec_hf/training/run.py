"""One training run, whatever the stage: checks, training, the adapter, the loss curve, the summary line."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..loading.json_files import write_json
from ..output_paths import refuse_overlap
from .checkpoints import check_output_dir, resolve_resume, save_adapter_atomically
from .contrastive import build_contrastive_trainer
from .mntp import build_mntp_trainer
from .reporting import next_step_summary, write_loss_curve
from .schedule import StopTrainingCallback

logger = logging.getLogger(__name__)

LOSS_CURVE = "loss_curve.png"


@dataclass
class TrainingResult:
    stage: str
    adapter_dir: str
    base: str
    adapters: list[str]
    metrics: dict = field(default_factory=dict)
    loss_curve: str | None = None
    summary: str = ""
    trainer: object = None


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_training(recipe) -> TrainingResult:
    args, stage = recipe.training, recipe.model.stage
    if getattr(args, "load_best_model_at_end", False):
        raise ValueError("load_best_model_at_end is not supported: each stage keeps its last adapter")
    resume_requested = args.resume_from_checkpoint not in (None, False, "", "false", "False")
    model, data = recipe.model, recipe.data
    # An adapter written into the base folder would be auto-loaded by transformers with every later load of it.
    refuse_overlap(args.output_dir, [("base", model.model_name_or_path),
                                     *(("adapter", adapter) for adapter in model.peft_model_name_or_path or []),
                                     ("train_file", data.train_file), ("validation_file", data.validation_file)],
                   option="output_dir")
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    if _is_main_process():
        check_output_dir(args.output_dir, resuming=resume_requested, overwrite=recipe.schedule.overwrite_output_dir)
    args.resume_from_checkpoint = resume

    if stage == "mntp":
        trainer, base_folder = build_mntp_trainer(recipe, resume)
    else:
        trainer, base_folder = build_contrastive_trainer(recipe, resume)

    stop = recipe.schedule.stop_after_n_steps
    if stop:
        trainer.add_callback(StopTrainingCallback(stop))
    if resume:
        logger.info("Resuming from %s", resume)
    train_output = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(train_output.metrics)
    if stage == "mntp" and trainer.eval_dataset is not None:
        last_eval = [e for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == trainer.state.global_step]
        metrics.update(last_eval[-1] if last_eval else trainer.evaluate())
    save_adapter_atomically(trainer, args.output_dir)
    adapters = list(recipe.model.peft_model_name_or_path or [])
    result = TrainingResult(stage, args.output_dir, recipe.model.model_name_or_path, adapters, metrics,
                            trainer=trainer)
    if trainer.is_world_process_zero():
        trainer.save_state()
        write_json(os.path.join(args.output_dir, "train_results.json"),
                   {"stage": stage, "base": recipe.model.model_name_or_path, "adapters": adapters,
                    "recipe": recipe.source, **metrics}, indent=2)
        result.loss_curve = write_loss_curve(trainer.state.log_history, os.path.join(args.output_dir, LOSS_CURVE),
                                             f"{stage} loss")
        result.summary = next_step_summary(stage, recipe.model.model_name_or_path, adapters, args.output_dir)
        logger.info(result.summary)
    trainer.accelerator.wait_for_everyone()  # no rank returns before the adapter is on disk
    return result
