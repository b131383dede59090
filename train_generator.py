"""Train a StyleGAN2 generator on real faces (scikit-image's LFW subset, 32²).

    python train_generator.py                               # the recipe of generator=lfw32
    python train_generator.py gan.iterations=200 output_dir=runs/try
    python train_generator.py trainer.accelerator=gpu       # same recipe on a GPU

Rerunning the same command continues from <output_dir>/checkpoints/last.ckpt. The EMA
generator lands in <output_dir>/generator_ema.safetensors (the project's safetensors format,
``generator=local generator.source=...`` loads it) with generator_ema.json beside it.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from callbacks.loggers import finish, make_logger
from rls.data.lfw import SPLITS, lfw_faces
from rls.lit.gan_module import fit_gan


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def keep_earlier_csv(output_dir: Path, cfg: DictConfig) -> None:
    """A resumed run's CSVLogger would replace metrics.csv: keep the earlier invocation's
    rows as metrics_<n>.csv beside it first."""
    if cfg.logger.get("kind") != "csv":
        return
    csv = output_dir / (cfg.logger.get("name") or "csv") / "metrics.csv"
    if csv.is_file():
        n = len(list(csv.parent.glob("metrics_*.csv")))
        csv.rename(csv.with_name(f"metrics_{n}.csv"))


@hydra.main(version_base="1.3", config_path="configs", config_name="train_generator")
def main(cfg: DictConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    output_dir = Path(cfg.output_dir)
    images = lfw_faces(cfg.data.split, resolution=int(cfg.data.resolution)) * 2 - 1
    gan = OmegaConf.to_container(cfg.gan, resolve=True)
    recipe = OmegaConf.to_container(cfg, resolve=True)
    recipe.pop("hydra", None)
    keep_earlier_csv(output_dir, cfg)
    logger = make_logger(cfg.logger, output_dir, name=output_dir.name, job_type="train_generator",
                         config=recipe)  # fmt: skip
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    module = fit_gan(
        images,
        OmegaConf.to_container(cfg.generator, resolve=True),
        OmegaConf.to_container(cfg.discriminator, resolve=True),
        output_dir,
        seed=int(cfg.seed),
        resume=bool(cfg.resume),
        logger=logger,
        callbacks=callbacks,
        trainer_kwargs=OmegaConf.to_container(cfg.trainer, resolve=True),
        metadata={"source": "train_generator.py", "data": f"lfw {cfg.data.split}"},
        **gan,
    )
    finish(logger)
    record = {
        "generator": str(output_dir / "generator_ema.safetensors"),
        "iterations": module.iteration,
        "images_seen": module.iteration * int(gan["batch_size"]),
        "train_seconds": round(module.train_seconds, 1),
        "machine": machine(),
        "split": {"train": [SPLITS[cfg.data.split][0], SPLITS[cfg.data.split][-1]],
                  "held_out": [SPLITS["heldout"][0], SPLITS["heldout"][-1]]},
        "recipe": recipe,
    }  # fmt: skip
    (output_dir / "generator_ema.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("generator", "iterations", "train_seconds")}))
    return record


if __name__ == "__main__":
    main()
