"""What a run leaves for its user: the loss curve as a PNG and a one-line summary of what comes next.

The PNG is drawn with matplotlib, which comes with ``pip install llm2vec-hf[train]`` (the README's set-up
installs it). Without matplotlib the run still ends normally: no PNG, one log line saying how to get it, and the
same numbers stay in ``trainer_state.json`` (and in the TensorBoard logs, where tensorboard is installed).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def loss_points(log_history: list[dict]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, training loss) and (step, eval loss) pairs from ``trainer.state.log_history``."""
    train = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    evals = [(int(e["step"]), float(e["eval_loss"])) for e in log_history if "eval_loss" in e and "step" in e]
    return train, evals


def write_loss_curve(log_history: list[dict], path: str, title: str = "training loss") -> str | None:
    """Draw the training (and eval) loss to ``path``; returns the path, or None when nothing was drawn."""
    train, evals = loss_points(log_history)
    if not train:
        logger.info("No logged loss yet; no loss curve written")
        return None
    try:
        import matplotlib
    except ImportError:
        logger.info("matplotlib is not installed, so no %s was drawn (pip install 'llm2vec-hf[train]'); "
                    "the losses are in trainer_state.json", path)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    axes.plot(*zip(*train), label="train", color="tab:blue")
    if evals:
        axes.plot(*zip(*evals), "o-", label="eval", color="tab:orange")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def next_step_summary(stage: str, base: str, adapters: list[str], adapter_dir: str) -> str:
    """One line: where the adapter went and the command that comes next."""
    chain = [*adapters, adapter_dir]
    export = "llm2vec-hf export " + base + "".join(f" --adapter {a}" for a in chain) + " --output OUTPUT_DIR"
    if stage == "mntp":
        return (f"MNTP adapter saved to {adapter_dir}. Next: llm2vec-hf train SIMCSE_OR_SUPERVISED.yaml "
                f"--peft_model_name_or_path {' '.join(chain)}   (or export now: {export})")
    return f"{stage} adapter saved to {adapter_dir}. Next: {export}"

