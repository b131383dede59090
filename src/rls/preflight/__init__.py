"""Checks of an evaluation's settings made before any expensive work.

Loading a 1024² generator or training a flow takes minutes; a scale the generator cannot
reach, a missing data folder, LR images of the wrong size or a negative learning rate
should fail at once, with a message naming the setting to change (``scale=7: ...``).
Everything here reads configuration values and file headers only: no network is built.

:func:`check_evaluation` walks an evaluation config (the keys of ``configs/evaluate.yaml``
as a plain mapping); the other functions each check one thing and are usable alone.
"""

from __future__ import annotations

from rls.preflight.errors import PreflightError
from rls.preflight.evaluation import check_against_generator, check_evaluation, check_methods
from rls.preflight.files import (
    check_checkpoint_file,
    check_flow_training,
    check_folder,
    check_landmarks_model,
    check_lr_sizes,
    check_prior_path,
    image_sizes,
)
from rls.preflight.generator import check_scale, generator_resolution
from rls.preflight.settings import (
    DEVICES_HINT,
    check_choice,
    check_corruption,
    check_data,
    check_has_images,
    check_run_settings,
    check_trainer,
)

__all__ = [
    "DEVICES_HINT",
    "PreflightError",
    "check_against_generator",
    "check_checkpoint_file",
    "check_choice",
    "check_corruption",
    "check_data",
    "check_evaluation",
    "check_flow_training",
    "check_folder",
    "check_has_images",
    "check_landmarks_model",
    "check_lr_sizes",
    "check_methods",
    "check_prior_path",
    "check_run_settings",
    "check_scale",
    "check_trainer",
    "generator_resolution",
    "image_sizes",
]
