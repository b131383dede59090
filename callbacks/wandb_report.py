"""The Hydra side of a sweep's W&B Report: :class:`PublishReport` publishes it at the end of
a ``-m`` sweep; the report itself is built by :mod:`rls.reports.wandb_report`.

``python -m callbacks.wandb_report ...`` is ``python -m rls.reports wandb ...`` (the
command the README and :class:`PublishReport`'s messages give).
"""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback

from rls.reports.wandb_report import build_report, main, publish


class PublishReport(Callback):
    """Hydra callback (``hydra.callbacks`` in configs/evaluate.yaml): at the end of a
    ``-m`` sweep run with ``logger=wandb``, publish the sweep's W&B Report when W&B is
    online; offline, print the command that builds it after ``wandb sync``."""

    def __init__(self, entity: str | None = None):
        self.entity = entity

    def on_multirun_end(self, config, **kwargs) -> None:
        from callbacks.loggers import wandb_mode

        logger = config.get("logger") or {}
        if logger.get("kind") != "wandb":
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        mode = wandb_mode(logger.get("mode", "auto"))
        if mode == "offline":
            print(
                "[wandb] offline runs: upload them with `wandb sync <run dir>/wandb/offline-run-*`"
                " for each member, then build the sweep's W&B Report with\n"
                f"    python -m callbacks.wandb_report {sweep_dir} --entity <your W&B entity>"
            )
        if mode != "online":
            return
        import wandb

        wandb.teardown()  # the members' last W&B records reach their files
        try:
            entity = self.entity or wandb.Api().default_entity
            report = build_report([sweep_dir], entity, logger.get("project"))
            print(f"[wandb] sweep report: {publish(report)}")
        except Exception as error:  # the sweep's results matter more than its W&B page
            print(
                f"[wandb] could not publish the sweep report: {error!r}; later: "
                f"python -m callbacks.wandb_report {sweep_dir} --entity <entity>"
            )


if __name__ == "__main__":
    main(prog="python -m callbacks.wandb_report")
