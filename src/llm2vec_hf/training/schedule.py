"""The learning-rate schedule a recipe resolves to, and the official stop-at-step rule.

The official LLM2Vec recipes set no ``max_steps``: the Trainer decays the learning rate linearly over
``num_train_epochs`` (3) worth of steps, and a callback stops training at ``stop_after_n_steps`` (1000). At the
stop the learning rate is therefore still 90-95 % of its peak. ``StopTrainingCallback`` is that callback;
``resolve_schedule`` computes the schedule without loading a model (``llm2vec-hf train --print-config``), counting
the steps of one epoch from the data as the Trainer's dataloader will.
"""

from __future__ import annotations

import logging
import math
from dataclasses import fields
from typing import Any

from transformers import TrainerCallback

from ..errors import one_line
from .contrastive import load_contrastive_rows
from .data import DataError, GroupedBatchSampler
from .memory_plan import plan
from .mntp import count_blocks

logger = logging.getLogger(__name__)


class StopTrainingCallback(TrainerCallback):
    """Stops after optimizer step ``stop_after_n_steps``; the schedule keeps its full length (official rule)."""

    def __init__(self, stop_after_n_steps: int):
        self.stop_after_n_steps = stop_after_n_steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.stop_after_n_steps:
            control.should_training_stop = True


def world_size(training_args) -> int:
    try:
        return max(int(training_args.world_size), 1)
    except Exception:  # noqa: BLE001 - a device query can fail on a machine without the requested backend
        return 1


def count_steps_per_epoch(recipe) -> tuple[int | None, str]:
    """Optimizer steps in one epoch, counted from the data without loading the model, and how they were counted.

    ``None`` (with the reason) when the data cannot be read here, e.g. a Hub dataset that is not cached offline.
    """
    args, stage = recipe.training, recipe.model.stage
    devices = world_size(args)
    per_device = args.per_device_train_batch_size
    try:
        if stage == "mntp":
            units, how = count_blocks(recipe)
            batches = math.ceil(units / (per_device * devices))  # the Trainer keeps the last, smaller batch
        else:
            columns, groups = load_contrastive_rows(recipe)
            sampler = GroupedBatchSampler(groups, per_device, devices, args.seed, drop_last=stage != "simcse")
            batches = len(sampler) // devices
            how = (f"{len(groups)} rows in {len(set(groups))} dataset(s) -> {batches} global batches of "
                   f"{per_device} x {devices}")
    except (DataError, OSError, ValueError) as error:
        return None, f"cannot count the training data here: {error}"
    accumulation = args.gradient_accumulation_steps
    steps = max(batches // accumulation + int(batches % accumulation > 0), 1)  # as Trainer.set_initial_training_values
    return steps, how


def resolve_schedule(recipe, steps_per_epoch: int | None, how: str = "") -> dict[str, Any]:
    """The learning rate the Trainer will use: scheduler type, peak, warmup, the decay length and the stop step."""
    args = recipe.training
    stop = recipe.schedule.stop_after_n_steps
    if args.max_steps and args.max_steps > 0:
        num_training_steps, source = args.max_steps, "max_steps"
    elif steps_per_epoch is not None:
        num_training_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
        source = f"num_train_epochs {args.num_train_epochs:g} x {steps_per_epoch} steps per epoch ({how})"
    else:
        num_training_steps, source = None, f"unknown: {how}"
    scheduler = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    resolved: dict[str, Any] = {
        "lr_scheduler_type": scheduler,
        "learning_rate": args.learning_rate,
        "warmup_steps": args.get_warmup_steps(num_training_steps) if num_training_steps is not None else (
            int(args.warmup_steps) if args.warmup_steps >= 1 or args.warmup_steps == 0
            else f"{args.warmup_steps:g} x num_training_steps"),
        "num_training_steps": num_training_steps,
        "num_training_steps_from": source,
        "steps_per_epoch": steps_per_epoch,
        # Steps per epoch shrink with the devices; counted for the process this runs in (launch it as the run).
        "devices": world_size(args),
        "stop_after_n_steps": stop,
    }
    if num_training_steps is None:
        resolved["stop_step"] = stop
        resolved["learning_rate_at_stop"] = None
        return resolved
    stop_step = min(stop, num_training_steps) if stop else num_training_steps
    resolved["stop_step"] = stop_step
    rates = learning_rates(recipe, num_training_steps, stop_step)
    resolved["learning_rate_at_stop"] = rates[-1]
    resolved["learning_rate_at_stop_over_peak"] = rates[-1] / args.learning_rate if args.learning_rate else None
    return resolved


def learning_rates(recipe, num_training_steps: int, last_step: int) -> list[float]:
    """The learning rate of optimizer steps 1..``last_step``, from transformers' own scheduler (no model)."""
    import torch
    from transformers import get_scheduler

    args = recipe.training
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=args.learning_rate)
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(num_training_steps),
        num_training_steps=num_training_steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs or {},
    )
    rates = []
    for _ in range(last_step):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def _plain(value: Any) -> Any:
    """JSON-friendly form of an argument value (enums by value, anything unknown as its text)."""
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


def memory_plan_or_reason(recipe) -> dict[str, Any]:
    """The step's memory plan (``memory_plan.plan``), or why it cannot be made here (a base whose config is not
    on this machine): printing the recipe never needs the plan."""
    try:
        return plan(recipe)
    except (OSError, ValueError) as error:
        return {"unavailable": one_line(error)}


def resolved_config(recipe) -> dict[str, Any]:
    """Every field of every argument class, overrides applied, plus the resolved learning-rate schedule."""
    sections = {}
    for name in ("model", "data", "mntp", "contrastive", "schedule"):
        section = getattr(recipe, name)
        sections[name] = {f.name: _plain(getattr(section, f.name)) for f in fields(section)}
    training = recipe.training
    sections["training"] = {f.name: _plain(getattr(training, f.name)) for f in fields(training)
                            if f.init and hasattr(training, f.name)}
    steps_per_epoch, how = count_steps_per_epoch(recipe)
    sections["lr_schedule"] = resolve_schedule(recipe, steps_per_epoch, how)
    sections["memory_plan"] = memory_plan_or_reason(recipe)
    sections["recipe"] = recipe.source
    return sections
