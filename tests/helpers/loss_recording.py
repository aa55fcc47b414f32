"""The loss of every training micro-batch, unrounded and per process, for tests that compare runs step by step.

The Trainer logs losses averaged over ``logging_steps`` and rounded to four digits, and no ``TrainerCallback``
receives the loss itself; these tests compare runs within 1e-6, so they wrap the two trainers' ``compute_loss``.
"""

from __future__ import annotations


def record_losses(patch=setattr) -> None:
    """Makes every ``MNTPTrainer`` and ``ContrastiveTrainer`` append each training loss to its ``recorded_losses``.

    ``patch``: ``setattr``, or ``pytest.MonkeyPatch.setattr`` to undo it afterwards.
    """
    from llm2vec_hf.training.contrastive import ContrastiveTrainer
    from llm2vec_hf.training.mntp import MNTPTrainer

    for trainer_class in (MNTPTrainer, ContrastiveTrainer):
        def compute_loss(self, model, inputs, *args, _original=trainer_class.compute_loss, **kwargs):
            result = _original(self, model, inputs, *args, **kwargs)
            if model.training:
                loss = result[0] if isinstance(result, tuple) else result
                self.__dict__.setdefault("recorded_losses", []).append(float(loss.detach().float().cpu()))
            return result

        patch(trainer_class, "compute_loss", compute_loss)


def losses(run) -> list[float]:
    """The losses a ``TrainingResult``'s trainer recorded (``record_losses`` must have been called first)."""
    return list(run.trainer.__dict__.get("recorded_losses", []))
