"""An evaluation config walked as a whole (:func:`check_evaluation`)."""

from __future__ import annotations

from collections.abc import Mapping

from rls.degradations.downsample import DEFAULT_KERNEL
from rls.preflight.errors import PreflightError
from rls.preflight.files import (
    check_checkpoint_file,
    check_flow_training,
    check_folder,
    check_landmarks_model,
    check_lr_sizes,
    check_prior_path,
)
from rls.preflight.generator import check_scale, generator_resolution
from rls.preflight.settings import check_corruption, check_data, check_run_settings, check_trainer


def check_methods(methods: Mapping) -> None:
    """Each method's settings (``method.<name>.<key>``), as the method builder checks them."""
    from rls.search.settings import SettingError, check_settings

    for name, settings in (methods or {}).items():
        if not isinstance(settings, Mapping):
            continue
        body = {k: v for k, v in settings.items() if k not in ("_target_", "name", "method")}
        try:
            check_settings(body)
        except SettingError as err:
            raise PreflightError(f"method.{name}.{err}") from None


def check_evaluation(cfg: Mapping) -> dict:
    """Check an evaluation config (plain mapping of configs/evaluate.yaml's keys) before
    anything is loaded: every documented key of the file and of its groups (methods, data,
    corruption, trainer, metrics, prior, generator, scale). Returns what it learnt:
    ``{"resolution": int | None}``.

    Call it again with ``resolution=`` once the generator is loaded when the config did
    not tell it (a pickle): the resolution-dependent checks then still come before the
    flow is trained.
    """
    return _check(cfg, resolution=None)


def check_against_generator(cfg: Mapping, resolution: int) -> None:
    """The resolution-dependent checks, for a generator whose size the config did not tell."""
    _check(cfg, resolution=resolution, only_resolution=True)


def _check(cfg: Mapping, resolution: int | None, only_resolution: bool = False) -> dict:
    gen = dict(cfg.get("generator") or {})
    data = dict(cfg.get("data") or {})
    dataset = dict(data.get("dataset") or {})
    target = str(dataset.get("_target_", ""))
    if not only_resolution:
        check_methods(cfg.get("method") or {})
        source = gen.get("source")
        if source not in (None, "tiny") and not _is_url_or_known(source):
            check_checkpoint_file(source, "generator.source")
        prior_path = (cfg.get("prior") or {}).get("path")
        if prior_path:
            check_prior_path(prior_path)
        else:  # the flow may be trained: its recipe must be trainable
            check_flow_training(cfg.get("flow") or {}, cfg.get("flow_training") or {})
        check_run_settings(cfg)
        check_data(data)
        check_corruption(cfg.get("corruption") or {}, cfg.get("scale"))
        check_trainer(cfg.get("trainer") or {})
        if dataset.get("align") == "ffhq" and not dataset.get("landmarks"):
            check_landmarks_model(dataset.get("landmarks_model"))
        overrides = {k: v for k, v in gen.items() if k not in ("_target_", "source")}
        if source is not None:
            resolution = generator_resolution(source, **overrides)
    if resolution is None:
        return {"resolution": None}
    scale = cfg.get("scale")
    downsampler = (cfg.get("corruption") or {}).get("downsampler") or DEFAULT_KERNEL
    lr_side = check_scale(scale, resolution, downsampler)
    if target.endswith("LRFolderDataset"):
        given = dataset.get("resolution")
        if given is not None and given != lr_side:
            raise PreflightError(
                f"data.dataset.resolution={given}: LR images would be resized to {given}x{given},"
                f" but the generator's resolution {resolution} / scale={scale} needs "
                f"{lr_side}x{lr_side}; set data.dataset.resolution={lr_side} (or null)"
            )
        if given is None:
            root = check_folder(dataset.get("root"), "data.dataset.root")
            check_lr_sizes(root, lr_side, scale, resolution, "data.dataset.root")
    return {"resolution": resolution}


def _is_url_or_known(source) -> bool:
    from rls.generators.download import KNOWN_CHECKPOINTS, SHIPPED_GENERATORS, is_url

    text = str(source)
    return text in KNOWN_CHECKPOINTS or text in SHIPPED_GENERATORS or is_url(text)
