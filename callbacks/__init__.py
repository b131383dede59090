"""Lightning and Hydra callbacks shared by ``train_flow.py`` and ``evaluate.py``: thin
adapters that call into the library (``rls``); what they write is made by ``rls.reports``.

- ``callbacks.results.ResultsWriter``: per-image rows and images into the run directory
  (``rls.reports.run_files``); ``callbacks.report.ReportWriter``: its report.html
  (``rls.reports.run_html``).
- ``callbacks.search_wandb.SearchWandb``: the evaluation's W&B content.
- ``callbacks.flow_report.FlowReport``: the flow's pictures and prior-comparison table.
- ``callbacks.progress.RunProgressBar``: the progress bar of both jobs.
- ``callbacks.hydra_sweep.SweepReport`` (Hydra): a sweep's report after every member
  (``rls.reports.sweep``); ``callbacks.wandb_report.PublishReport`` (Hydra): its W&B Report.
- ``callbacks.loggers.make_logger(cfg, save_dir)``: W&B (offline unless an account is
  configured), CSV or no logger, from a ``configs/logger/*.yaml`` choice;
  ``callbacks.media``: log a matplotlib figure or a table to W&B when the trainer logs
  there, and always write it (PNG / CSV) into the run directory;
  ``callbacks.config_choices``: checks an entry point's config group choices.
- ``python -m callbacks.sweep`` and ``python -m callbacks.wandb_report``: the older names
  of ``python -m rls.reports sweep`` and ``python -m rls.reports wandb``.

Modules import lazily so one job never pays for another's dependencies.
"""
