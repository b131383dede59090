"""Train the W-space flow prior of RLS (method.md §2).

    python train_flow.py generator=tiny
    python train_flow.py generator=ffhq1024 optim.lr=1e-4 trainer.max_steps=200000
    python train_flow.py generator=tiny flow=nsf trainer=ddp trainer.accelerator=cpu

Outputs (in the Hydra run directory or output_dir=): flow.safetensors (load with
rls.flows.WFlow.load), metrics.json (held-out NLL of the flow and the older priors,
Gaussianity of f(w)), figures/, checkpoints/ (last.ckpt resumes).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from callbacks.loggers import finish, make_logger, sweep_name
from rls.lit import fit_flow


@hydra.main(version_base="1.3", config_path="configs", config_name="train_flow")
def main(cfg: DictConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    output_dir = Path(cfg.output_dir)
    G = instantiate(cfg.generator)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    max_steps = int(trainer_kwargs.pop("max_steps"))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    logger = make_logger(
        cfg.logger,
        output_dir,
        name=output_dir.name,
        group=sweep_name(),
        job_type="train_flow",
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    if logger and not isinstance(logger, WandbLogger):  # W&B got the config at its start
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    flow, metrics = fit_flow(
        G,
        OmegaConf.to_container(cfg.flow, resolve=True),
        max_steps=max_steps,
        batch_size=cfg.data.batch_size,
        seed=cfg.seed,
        val_size=cfg.data.val_size,
        output_dir=output_dir,
        logger=logger,
        callbacks=callbacks,
        trainer_kwargs=trainer_kwargs,
        epoch_size=cfg.data.epoch_size,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        schedule=cfg.optim.schedule,
        patience=cfg.optim.patience,
        gradient_clip_val=cfg.optim.gradient_clip_val,
        resume=cfg.resume,
        generator_name=str(cfg.generator.get("source")),
    )
    finish(logger)  # one W&B run per job, also for several jobs in one process (-m)
    if rank_zero_only.rank == 0:
        print(json.dumps({"val_nll": metrics["val_nll"]}, indent=2))
        print(f"flow: {output_dir / 'flow.safetensors'}\nmetrics: {output_dir / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
