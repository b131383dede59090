"""Lightning callbacks and logging helpers shared by ``train_flow.py`` and ``evaluate.py``.

- ``callbacks.loggers.make_logger(cfg, save_dir)``: W&B (offline unless an account is
  configured), CSV or no logger, from a ``configs/logger/*.yaml`` choice.
- ``callbacks.media``: log a matplotlib figure or a table to W&B when the trainer logs
  there, and always write it (PNG / CSV) into the run directory.
- ``callbacks.flow_report.FlowReport``: the flow's pictures and prior-comparison table.
- ``callbacks.search_wandb.SearchWandb``: the evaluation's W&B content;
  ``callbacks.wandb_offline``: reads W&B run files; ``callbacks.wandb_report``: a sweep's
  W&B Report (``python -m callbacks.wandb_report``).

Modules import lazily so one job never pays for another's dependencies.
"""
