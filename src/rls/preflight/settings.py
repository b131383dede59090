"""Plain settings: each documented key of configs/evaluate.yaml and its groups."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from rls.preflight.errors import PreflightError
from rls.preflight.files import check_checkpoint_file, check_folder


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _need(ok: bool, key: str, value, what: str) -> None:
    if not ok:
        raise PreflightError(f"{key}={value!r}: {what}")


def check_choice(value, key: str, choices) -> None:
    """``value`` one of ``choices``, or :class:`PreflightError` listing them."""
    shown = ", ".join("null" if c is None else str(c) for c in choices)
    _need(value in choices, key, value, f"must be one of {shown}")


DEVICES_HINT = "a positive integer, -1 (all), auto, or a list of device indices such as [0,1]"


def check_trainer(trainer: Mapping) -> None:
    """The ``trainer`` group: keyword arguments of ``pytorch_lightning.Trainer`` that exist,
    and a device count that selects at least one device."""
    import inspect

    import pytorch_lightning as pl

    known = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    for key in trainer:
        if key not in known:
            near = sorted(k for k in known if k[:3] == str(key)[:3])
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise PreflightError(f"trainer.{key}: not a pytorch_lightning.Trainer argument{hint}")
    devices = trainer.get("devices", "auto")
    if isinstance(devices, str) and devices != "auto":
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        _need(parts and all(p.lstrip("-").isdigit() for p in parts), "trainer.devices",
              devices, f"must be {DEVICES_HINT}")  # fmt: skip
        devices = int(parts[0]) if len(parts) == 1 and not devices.endswith(",") else parts
    if _is_int(devices):
        _need(devices >= 1 or devices == -1, "trainer.devices", devices, f"must be {DEVICES_HINT}")
    elif isinstance(devices, list | tuple):
        _need(len(devices) > 0, "trainer.devices", devices, f"must be {DEVICES_HINT}")
    elif devices != "auto":
        raise PreflightError(f"trainer.devices={devices!r}: must be {DEVICES_HINT}")
    nodes = trainer.get("num_nodes", 1)
    _need(_is_int(nodes) and nodes >= 1, "trainer.num_nodes", nodes, "must be a positive integer")


def check_corruption(corruption: Mapping, scale) -> None:
    """The ``corruption`` group, by building it (cheap: no network): unknown names,
    parameters no corruption takes, severities outside 1..5; a severity with no corruption
    to apply it to (``corruption=none corruption.severity=3``) is refused, not ignored."""
    from rls.degradations import build_degradation

    settings = dict(corruption or {})
    severity = settings.get("severity")
    entries = settings.get("corruptions", settings.get("corruption"))
    if severity is not None and entries in (None, "none", [], ()):
        raise PreflightError(
            f"corruption.severity={severity}: corruption={settings.get('name', 'none')} applies "
            "no corruption, so the severity would be ignored; choose one (e.g. "
            "corruption=gaussian_noise) or drop corruption.severity"
        )
    try:
        build_degradation(scale if _is_int(scale) and scale > 0 else 8, **settings)
    except (ValueError, TypeError, KeyError) as err:
        raise PreflightError(f"corruption: {err}") from None


def check_data(data: Mapping, resolution: int | None = None) -> None:
    """The ``data`` group: loader settings and the chosen dataset's keys (a folder that
    holds no image the reader takes is refused, naming what it does hold)."""
    batch = data.get("batch_size")
    _need(batch == "auto" or (_is_int(batch) and batch >= 1), "data.batch_size", batch,
          "must be a positive integer or auto")  # fmt: skip
    workers = data.get("num_workers", 0)
    _need(_is_int(workers) and workers >= 0, "data.num_workers", workers,
          "must be 0 (load in the main process) or a positive integer")  # fmt: skip
    dataset = dict(data.get("dataset") or {})
    target = str(dataset.get("_target_", ""))
    if "on_error" in dataset:
        check_choice(dataset["on_error"], "data.dataset.on_error", ("record", "skip", "raise"))
    if "max_pixels" in dataset:
        most = dataset["max_pixels"]
        _need(most is None or (_is_int(most) and most >= 1), "data.dataset.max_pixels", most,
              "must be null (no limit) or a positive integer (Pillow: 89478485)")  # fmt: skip
    if target.endswith("GeneratorSampleDataset"):
        n = dataset.get("n")
        _need(_is_int(n) and n >= 1, "data.dataset.n", n, "must be a positive integer (images)")
        seed = dataset.get("seed", 0)
        _need(_is_int(seed), "data.dataset.seed", seed, "must be an integer")
        psi = dataset.get("truncation_psi", 1.0)
        _need(_is_number(psi), "data.dataset.truncation_psi", psi, "must be a number (1.0: none)")
        check_choice(dataset.get("noise_mode", "const"), "data.dataset.noise_mode",
                     ("const", "random", "none"))  # fmt: skip
    if target.endswith("ImageFolderDataset"):
        fraction = dataset.get("min_hr_fraction", 0.5)
        _need(_is_number(fraction) and 0 <= fraction <= 1, "data.dataset.min_hr_fraction",
              fraction, "must be a number in [0, 1]")  # fmt: skip
        check_choice(dataset.get("align"), "data.dataset.align", (None, "ffhq"))
        paste = dataset.get("paste_back", False)
        _need(isinstance(paste, bool), "data.dataset.paste_back", paste, "must be true or false")
        if paste and dataset.get("align") != "ffhq":
            raise PreflightError(
                "data.dataset.paste_back=true: pastes aligned faces back into their photos, "
                "so it needs data.dataset.align=ffhq"
            )
    if target.endswith("LRFolderDataset"):
        side = dataset.get("resolution")
        _need(side is None or (_is_int(side) and side >= 1), "data.dataset.resolution", side,
              "must be null (the images' own size) or a positive integer")  # fmt: skip
    if "root" in dataset:
        check_has_images(check_folder(dataset["root"], "data.dataset.root"), "data.dataset.root")


def check_has_images(root: Path, key: str) -> None:
    """A folder holding at least one entry the dataset reads; else :class:`PreflightError`
    naming what it holds instead."""
    from rls.data import list_images

    if list_images(root):
        return
    visible = [p for p in root.iterdir() if not p.name.startswith(".")]
    entries = sorted(p.name for p in visible if not p.is_dir())
    folders = sorted(p.name for p in visible if p.is_dir())
    if not entries and folders:
        raise PreflightError(
            f"{key}={root}: holds only folders ({', '.join(folders[:4])}); the images must be "
            f"in the folder itself, e.g. {key}={root / folders[0]}"
        )
    if not entries:
        raise PreflightError(f"{key}={root}: the folder is empty; put the images to restore in it")
    suffixes = Counter(Path(e).suffix.lower() or "(no suffix)" for e in entries)
    held = ", ".join(f"{n} {s}" for s, n in suffixes.most_common(6))
    raise PreflightError(
        f"{key}={root}: no image the reader takes (it holds {held}); convert them to an image "
        "format Pillow reads, such as PNG or JPEG"
    )


def check_run_settings(cfg: Mapping) -> None:
    """The top-level keys and the ``metrics`` / ``prior`` settings of configs/evaluate.yaml."""
    scale = cfg.get("scale")
    _need(_is_int(scale) and scale >= 1, "scale", scale, "must be a positive integer (8, 16, 32)")
    seed = cfg.get("seed", 0)
    _need(_is_int(seed), "seed", seed, "must be an integer (e.g. seed=0)")
    threads = cfg.get("threads")
    _need(threads is None or (_is_int(threads) and threads >= 1), "threads", threads,
          "must be null (torch's default) or a positive integer")  # fmt: skip
    for key in ("bicubic_baseline", "reuse_rls_anchor"):
        if key in cfg:
            _need(isinstance(cfg[key], bool), key, cfg[key], "must be true or false")
    metrics = dict(cfg.get("metrics") or {})
    from rls.metrics import LPIPS_BACKBONES

    lpips = metrics.get("lpips", [])
    lpips = [lpips] if isinstance(lpips, str) else list(lpips or [])
    for net in lpips:
        check_choice(net, "metrics.lpips", tuple(LPIPS_BACKBONES))
    for key in ("fid",):
        if key in metrics:
            _need(isinstance(metrics[key], bool), f"metrics.{key}", metrics[key],
                  "must be true or false")  # fmt: skip
    subset = metrics.get("kid_subset_size", 1000)
    _need(_is_int(subset) and subset >= 2, "metrics.kid_subset_size", subset,
          "must be an integer of at least 2")  # fmt: skip
    check_choice(metrics.get("allow_download"), "metrics.allow_download", (None, True, False))
    prior = dict(cfg.get("prior") or {})
    if prior.get("stats"):
        check_checkpoint_file(prior["stats"], "prior.stats")
        if not prior.get("path"):
            raise PreflightError(
                f"prior.stats={prior['stats']}: goes with an authors' flow checkpoint in "
                "prior.path, which is not set"
            )
    if "train_if_missing" in prior:
        _need(isinstance(prior["train_if_missing"], bool), "prior.train_if_missing",
              prior["train_if_missing"], "must be true or false")  # fmt: skip
