"""Train the W-space flow prior of RLS (method.md §2).

    python train_flow.py                                   # the authors' flow for generator=tiny
    python train_flow.py generator=ffhq1024 flow_training.max_steps=200000
    python train_flow.py generator=tiny flow=maf trainer=ddp trainer.accelerator=cpu

With no ``output_dir`` the flow goes into the flow cache
(``.cache/flows/<generator hash>-<recipe hash>/``) where ``python evaluate.py`` finds it
for the same generator and recipe; a flow already there is reused, not retrained.
Outputs: flow.safetensors (load with rls.flows.load_prior), metrics.json (held-out NLL
of the flow and the older priors, Gaussianity of f(w)), figures/, checkpoints/.
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
from rls.flows.recipe import FLOW_FILE, FlowRecipe, flow_cache_dir
from rls.lit import cached_flow, fit_flow


@hydra.main(version_base="1.3", config_path="configs", config_name="train_flow")
def main(cfg: DictConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    # the recipe first: settings that cannot train are refused before the generator is built
    recipe = FlowRecipe.from_settings(
        OmegaConf.to_container(cfg.flow, resolve=True),
        OmegaConf.to_container(cfg.flow_training, resolve=True),
    )
    G = instantiate(cfg.generator)
    cached = not cfg.output_dir
    output_dir = (
        flow_cache_dir(cfg.flow_training.cache_dir, G, recipe) if cached else Path(cfg.output_dir)
    )
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    logger = None
    if not (cached and (output_dir / FLOW_FILE).is_file()):  # nothing to log for a cached flow
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
    common = dict(
        generator_name=str(cfg.generator.get("source")),
        logger=logger,
        callbacks=callbacks,
        trainer_kwargs=trainer_kwargs,
    )
    if cached:
        result = cached_flow(G, recipe, cfg.flow_training.cache_dir, **common)
        metrics, trained = result.metrics, result.trained
    else:
        _, metrics = fit_flow(
            G, recipe.flow, output_dir=output_dir, resume=cfg.resume, **common,
            **recipe.training_kwargs(),
        )  # fmt: skip
        trained = True
    finish(logger)  # one W&B run per job, also for several jobs in one process (-m)
    if rank_zero_only.rank == 0:
        if not trained:
            print(f"already trained for this generator and recipe (delete {output_dir} to retrain)")
        print(json.dumps({"val_nll": metrics.get("val_nll")}, indent=2))
        print(f"flow: {output_dir / FLOW_FILE}\nmetrics: {output_dir / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
