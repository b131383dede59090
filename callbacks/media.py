"""Figures and tables for any job: to W&B when the trainer logs there, and always into
the run directory (``figures/<key>.png``, ``tables/<key>.csv``) so a run without W&B
keeps its pictures."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def wandb_loggers(trainer) -> list:
    """The trainer's WandbLoggers (none when W&B is not in use)."""
    from pytorch_lightning.loggers import WandbLogger

    return [
        lg for lg in (trainer.loggers if trainer is not None else []) if isinstance(lg, WandbLogger)
    ]


def _safe_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def figure_to_array(fig: Figure) -> np.ndarray:
    """RGB uint8 array ``[H, W, 3]`` of a matplotlib figure (no pyplot needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_figure(trainer, key: str, fig: Figure, out_dir: str | Path | None = None) -> Path | None:
    """Write ``fig`` as PNG under ``out_dir/figures`` and log it to every WandbLogger."""
    path = None
    if out_dir is not None:
        path = Path(out_dir) / "figures" / f"{_safe_key(key)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        path.write_bytes(buf.getvalue())
    loggers = wandb_loggers(trainer)
    if loggers:
        image = figure_to_array(fig)
        for lg in loggers:
            lg.log_image(key=key, images=[image])
    return path


def log_table(
    trainer, key: str, columns: list[str], rows: list[list], out_dir: str | Path | None = None
) -> Path | None:
    """Write a table as CSV under ``out_dir/tables`` and log it to every WandbLogger."""
    path = None
    if out_dir is not None:
        path = Path(out_dir) / "tables" / f"{_safe_key(key)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(rows)
    for lg in wandb_loggers(trainer):
        lg.log_table(key=key, columns=columns, data=rows)
    return path
