"""What a run leaves for its user: the loss curve as a PNG and a one-line summary of what comes next.

The PNG is drawn with matplotlib where it is installed (``pip install llm2vec-hf[train]``); without it a small
built-in rasteriser draws the same curve (no axis labels), so the picture never depends on an optional package.
"""

from __future__ import annotations

import logging
import struct
import zlib

logger = logging.getLogger(__name__)


def loss_points(log_history: list[dict]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, training loss) and (step, eval loss) pairs from ``trainer.state.log_history``."""
    train = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    evals = [(int(e["step"]), float(e["eval_loss"])) for e in log_history if "eval_loss" in e and "step" in e]
    return train, evals


def write_loss_curve(log_history: list[dict], path: str, title: str = "training loss") -> str | None:
    train, evals = loss_points(log_history)
    if not train:
        logger.info("No logged loss yet; no loss curve written")
        return None
    try:
        import matplotlib

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
    except ImportError:
        _write_png_curve(path, [train, evals])
    return path


def _write_png_curve(path: str, series: list[list[tuple[int, float]]], width: int = 600, height: int = 400) -> None:
    """A white image with a grey frame and one polyline per series (blue, orange), as an 8-bit RGB PNG."""
    colors = [(31, 119, 180), (255, 127, 14)]
    pixels = [[(255, 255, 255)] * width for _ in range(height)]
    margin = 30
    points = [p for s in series for p in s]
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
    x_hi, y_hi = (x_hi if x_hi > x_lo else x_lo + 1), (y_hi if y_hi > y_lo else y_lo + 1e-9)

    def to_pixel(step: float, value: float) -> tuple[int, int]:
        x = margin + (step - x_lo) / (x_hi - x_lo) * (width - 2 * margin)
        y = height - margin - (value - y_lo) / (y_hi - y_lo) * (height - 2 * margin)
        return int(round(x)), int(round(y))

    for x in range(margin, width - margin + 1):
        pixels[margin][x] = pixels[height - margin][x] = (128, 128, 128)
    for y in range(margin, height - margin + 1):
        pixels[y][margin] = pixels[y][width - margin] = (128, 128, 128)
    for color, data in zip(colors, series):
        coords = [to_pixel(*p) for p in data]
        if len(coords) == 1:
            coords = coords * 2
        for (x0, y0), (x1, y1) in zip(coords, coords[1:]):
            steps = max(abs(x1 - x0), abs(y1 - y0), 1)
            for i in range(steps + 1):
                x, y = x0 + (x1 - x0) * i // steps, y0 + (y1 - y0) * i // steps
                for dy in (-1, 0, 1):
                    if 0 <= y + dy < height and 0 <= x < width:
                        pixels[y + dy][x] = color
    raw = b"".join(b"\x00" + bytes(c for pixel in row for c in pixel) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                     + chunk(b"IEND", b""))


def next_step_summary(stage: str, base: str, adapters: list[str], adapter_dir: str) -> str:
    """One line: where the adapter went and the command that comes next."""
    chain = [*adapters, adapter_dir]
    export = "llm2vec-hf export " + base + "".join(f" --adapter {a}" for a in chain) + " --output OUTPUT_DIR"
    if stage == "mntp":
        return (f"MNTP adapter saved to {adapter_dir}. Next: llm2vec-hf train SIMCSE_OR_SUPERVISED.yaml "
                f"--peft_model_name_or_path {' '.join(chain)}   (or export now: {export})")
    return f"{stage} adapter saved to {adapter_dir}. Next: {export}"

