"""What every stage's trainer shares: adapter-only saving, atomic checkpoints, resuming, the output folder.

* ``_save`` writes only the PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``), never the
  frozen base: that adapter is what the next stage and ``llm2vec-hf export --adapter`` read.
* Checkpoints are written under ``output_dir/.staging/`` and renamed into ``output_dir/checkpoint-N`` only once
  complete (after every rank wrote its RNG state), so a run killed at any moment leaves no half-written
  ``checkpoint-N`` behind; ``resume_from_checkpoint: true`` picks the newest one.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile

from safetensors.torch import load_file

from ..errors import LLM2VecError, name_some, one_line
from ..loading.adapters import load_adapter_state
from ..loading.json_files import read_json, write_json

logger = logging.getLogger(__name__)

STAGING = ".staging"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class AdapterTrainerMixin:
    """Mixed into ``transformers.Trainer`` subclasses whose model holds exactly one trainable PEFT adapter (the
    MNTP model itself, or the encoder inside a ``SentenceTransformer``); ``peft_model()`` finds it."""

    #: While a checkpoint is written: the staging folder the Trainer writes it into (see ``_get_output_dir``).
    _checkpoint_root: str | None = None

    def peft_model(self):
        from peft import PeftModel

        found = [module for module in self.model.modules() if isinstance(module, PeftModel)]
        if len(found) != 1:
            raise LLM2VecError(f"the trained model holds {len(found)} PEFT adapters; llm2vec-hf trains exactly one")
        return found[0]

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        if state_dict is not None:
            # Trainer passes a gathered state dict under DeepSpeed/FSDP; its keys carry the wrapper's prefix
            # (e.g. "0.auto_model." for a SentenceTransformer); PEFT wants them from "base_model.model." on.
            state_dict = {k[k.find("base_model.model."):]: v for k, v in state_dict.items() if "base_model.model." in k}
        self.peft_model().save_pretrained(output_dir, safe_serialization=True, state_dict=state_dict)
        logger.debug("Saved adapter to %s", output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        weights = os.path.join(resume_from_checkpoint, "adapter_model.safetensors")
        if not os.path.isfile(weights):
            raise LLM2VecError(f"{resume_from_checkpoint} holds no adapter_model.safetensors; cannot resume from it")
        check_run_settings(resume_from_checkpoint, self.args)
        try:
            state = load_file(weights)
        except Exception as error:  # safetensors raises its own SafetensorError and OSError
            raise LLM2VecError(f"Cannot resume from {resume_from_checkpoint}: {one_line(error)}") from None
        problem = load_adapter_state(self.peft_model(), state)
        if problem is not None:
            kind, detail = problem
            raise LLM2VecError({
                "shape": f"{resume_from_checkpoint} does not fit this run: {detail}; was lora_r changed?",
                "unexpected": f"{resume_from_checkpoint} does not fit this model: {detail}; was it written by another "
                              "recipe?",
                "missing": f"{resume_from_checkpoint} is incomplete, adapter tensors are missing: {detail}; cannot "
                           "resume from it",
            }[kind])
        logger.info("Resumed the adapter from %s", resume_from_checkpoint)

    def _load_best_model(self) -> None:  # pragma: no cover - load_best_model_at_end is refused in validation
        raise LLM2VecError("load_best_model_at_end is not supported by llm2vec-hf training")

    def _get_output_dir(self, trial) -> str:
        # The Trainer has no public setting for where one checkpoint goes: it puts checkpoint-N under the folder
        # this returns, so returning the staging folder during `_save_checkpoint` stages the whole checkpoint.
        return self._checkpoint_root or super()._get_output_dir(trial=trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = self._get_output_dir(trial=trial)
        staging_root = os.path.join(run_dir, STAGING)
        name = f"checkpoint-{self.state.global_step}"
        self._checkpoint_root = staging_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._checkpoint_root = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_run_settings(os.path.join(staging_root, name), self.args)
            target = os.path.join(run_dir, name)
            if os.path.exists(target):  # the same step saved again after a resume
                trash = tempfile.mkdtemp(prefix=".old-", dir=staging_root)
                os.replace(target, os.path.join(trash, name))
            os.replace(os.path.join(staging_root, name), target)
            shutil.rmtree(staging_root, ignore_errors=True)
            rotate_checkpoints(run_dir, self.args.save_total_limit)
        self.accelerator.wait_for_everyone()


#: Run settings a resumed run must share with the run that wrote the checkpoint: a change would make the resumed
#: run neither the old run nor a fresh one (the scheduler and data order are restored from the checkpoint).
#: ``max_steps``/``num_train_epochs`` may change: continuing a run for longer is what resuming is for.
RUN_SETTINGS_FILE = "llm2vec_run.json"
RUN_SETTINGS = (
    "learning_rate", "seed", "data_seed", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay",
    "per_device_train_batch_size", "gradient_accumulation_steps",
)


def _run_settings(args) -> dict:
    return {name: getattr(args, name) for name in RUN_SETTINGS if isinstance(getattr(args, name, None), (int, float, str))}


def write_run_settings(checkpoint: str, args) -> None:
    write_json(os.path.join(checkpoint, RUN_SETTINGS_FILE), _run_settings(args), indent=2)


def check_run_settings(checkpoint: str, args) -> None:
    """Refuses to resume with another learning rate, seed, schedule or batch size than the checkpoint's run."""
    path = os.path.join(checkpoint, RUN_SETTINGS_FILE)
    if not os.path.isfile(path):
        logger.info("%s records no run settings; resuming without checking them", checkpoint)
        return
    try:
        saved = read_json(path)
    except (OSError, ValueError) as error:
        raise LLM2VecError(f"Cannot resume from {checkpoint}: {RUN_SETTINGS_FILE} is unreadable ({error})") from None
    current = _run_settings(args)
    changed = [f"{k} {saved[k]!r} -> {current[k]!r}" for k in current if k in saved and saved[k] != current[k]]
    if changed:
        raise LLM2VecError(
            f"Cannot resume from {checkpoint}: the run changed ({'; '.join(changed)}); resume with the settings "
            "the checkpoint was written with, or start a new run in another output_dir"
        )


def rotate_checkpoints(run_dir: str, limit: int | None) -> None:
    if not limit or limit < 1:
        return
    for old in list_checkpoints(run_dir)[:-limit]:
        # Renamed out of sight first: a kill during the deletion must not leave a half-deleted checkpoint-N.
        doomed = os.path.join(run_dir, STAGING + "-deleting-" + os.path.basename(old))
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for entry in os.listdir(output_dir):
        match = _CHECKPOINT.match(entry)
        if match and os.path.isdir(os.path.join(output_dir, entry)):
            found.append((int(match.group(1)), os.path.join(output_dir, entry)))
    return [path for _, path in sorted(found)]


def resolve_resume(value, output_dir: str) -> str | None:
    """``true`` -> newest checkpoint in ``output_dir`` (None, with a log line, if there is none yet);
    ``false``/None -> None; a path -> that path, which must exist."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false", "no")):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "last", "latest")):
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.info("resume_from_checkpoint: no checkpoint in %s yet, starting from step 0", output_dir)
            return None
        return checkpoints[-1]
    path = str(value)
    if not os.path.isdir(path):
        raise LLM2VecError(f"resume_from_checkpoint: no such checkpoint folder {path}")
    return path


def check_output_dir(output_dir: str, resuming: bool, overwrite: bool = False) -> None:
    """The output folder must be writable, and hold nothing of another run unless resuming it or ``overwrite``
    (`output_paths.refuse_existing`, the rule of every command that writes); with ``overwrite`` an earlier
    run's checkpoints are removed first, so that they are never taken for this run's."""
    if not resuming:
        leftovers = [e for e in os.listdir(output_dir) if not _is_staging(e)] if os.path.isdir(output_dir) else []
        existing = list_checkpoints(output_dir) if leftovers else []
        if existing and not overwrite:
            raise LLM2VecError(
                f"output_dir {output_dir} already holds checkpoints ({os.path.basename(existing[-1])}); pass "
                "--resume_from_checkpoint true to continue that run, --overwrite_output_dir true to replace it, "
                "or choose another output_dir"
            )
        if leftovers and not overwrite:
            raise LLM2VecError(f"output_dir {output_dir} is not empty ({name_some(leftovers)}); pass "
                               "--overwrite_output_dir true to replace it, or choose another output_dir")
        for checkpoint in existing:
            shutil.rmtree(checkpoint)
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise LLM2VecError(f"Cannot write to output_dir {output_dir}: {error.strerror or error}") from None
    for entry in os.listdir(output_dir):
        if _is_staging(entry):
            shutil.rmtree(os.path.join(output_dir, entry), ignore_errors=True)


def _is_staging(entry: str) -> bool:
    """Our own staging folders: a checkpoint's, and the final adapter's (`save_adapter_atomically`)."""
    return entry == STAGING or entry.startswith((STAGING + "-deleting-", ".final-"))


def save_adapter_atomically(trainer, output_dir: str) -> None:
    """Writes the final adapter next to the checkpoints: staged, then each file renamed into place."""
    if not trainer.args.should_save:
        return
    staging = tempfile.mkdtemp(prefix=".final-", dir=output_dir)
    try:
        trainer._save(staging)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
