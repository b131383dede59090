"""Checks of an evaluation's settings made before any expensive work.

Loading a 1024² generator or training a flow takes minutes; a scale the generator cannot
reach, a missing data folder, LR images of the wrong size or a negative learning rate
should fail at once, with a message naming the setting to change (``scale=7: ...``).
Everything here reads configuration values and file headers only: no network is built.

:func:`check_evaluation` walks an evaluation config (the keys of ``configs/evaluate.yaml``
as a plain mapping); the other functions each check one thing and are usable alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from rls.degradations.downsample import DEFAULT_KERNEL, pulse_padding

log = logging.getLogger("rls.preflight")


class PreflightError(ValueError):
    """A setting that cannot work; the message starts with ``<config key>=<value>:``."""


# ----------------------------------------------------------------------------------------------
# the generator


def generator_resolution(source, **overrides) -> int | None:
    """The generator's output side read from its configuration, without building it.

    An ``img_resolution`` override, ``tiny``, a known checkpoint name, or a ``.safetensors``
    file written by ``rls.generators.save_generator`` (its metadata); ``None`` for anything
    else (a pickle tells its resolution only when loaded).
    """
    from rls.generators.download import KNOWN_CHECKPOINTS, shipped_path

    text = str(source)
    if shipped_path(text) is not None:
        text = str(shipped_path(text))
    if overrides.get("img_resolution") is not None:  # tiny, or a random-init official net
        return int(overrides["img_resolution"])
    if text == "tiny":
        from rls.generators.config import tiny_config

        return int(tiny_config()["img_resolution"])
    if text in KNOWN_CHECKPOINTS:
        return KNOWN_CHECKPOINTS[text].resolution
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                config = json.loads((f.metadata() or {}).get("config", "{}"))
            return int(config["img_resolution"])
        except Exception:  # unreadable here: the loader reports it properly
            return None
    return None


def check_scale(scale, resolution: int, downsampler: str = DEFAULT_KERNEL) -> int:
    """The LR side ``resolution / scale``, or :class:`PreflightError` naming ``scale``.

    The scale must divide the generator's resolution, and the paper's bicubic downsampler
    reflect-pads by about 1.5·scale pixels on each side, which the HR image must exceed.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise PreflightError(f"scale={scale}: must be a positive integer (8, 16, 32, 64)")
    usable = [s for s in range(1, resolution + 1) if _reachable(s, resolution, downsampler)]
    hint = f"scales that work with it: {', '.join(map(str, usable[1:] or usable))}"
    if resolution % scale:
        raise PreflightError(
            f"scale={scale}: the generator's resolution {resolution} is not divisible by "
            f"{scale}, so there is no integer LR size; {hint} (or use another generator)"
        )
    if not _reachable(scale, resolution, downsampler):
        _, pad = pulse_padding(scale)
        raise PreflightError(
            f"scale={scale}: the {downsampler} downsampler reflect-pads the HR image by {pad} "
            f"pixels at scale {scale}, which needs an image larger than {pad}x{pad}, but the "
            f"generator makes {resolution}x{resolution}; {hint} (or corruption.downsampler="
            "area/box)"
        )
    return resolution // scale


def _reachable(scale: int, resolution: int, downsampler: str) -> bool:
    if resolution % scale:
        return False
    if downsampler == "bicubic_pulse" and scale > 1:
        return pulse_padding(scale)[1] < resolution
    return True


# ----------------------------------------------------------------------------------------------
# files and folders


def check_folder(root, key: str) -> Path:
    """An existing, readable folder, or :class:`PreflightError` naming ``key``."""
    if root in (None, "", "???"):
        raise PreflightError(f"{key}: not set; pass {key}=/path/to/images")
    path = Path(str(root)).expanduser()
    if not path.exists():
        raise PreflightError(f"{key}={root}: no such folder")
    if not path.is_dir():
        raise PreflightError(f"{key}={root}: a file, not a folder of images")
    if not os.access(path, os.R_OK | os.X_OK):
        raise PreflightError(f"{key}={root}: the folder is not readable (permission denied)")
    return path


def check_checkpoint_file(path, key: str) -> Path:
    """An existing file for a checkpoint setting, or :class:`PreflightError` naming ``key``
    (a directory, a missing file, or a Lightning ``.ckpt`` given where a flow is wanted)."""
    if path in (None, "", "???"):
        raise PreflightError(f"{key}: not set; pass {key}=/path/to/the/file")
    p = Path(str(path)).expanduser()
    if p.is_dir():
        inside = sorted(q.name for q in p.iterdir() if q.suffix in (".safetensors", ".pkl", ".pt"))
        hint = f" (it holds {', '.join(inside[:4])})" if inside else ""
        raise PreflightError(f"{key}={path}: a directory; pass the checkpoint file in it{hint}")
    if not p.exists():
        raise PreflightError(f"{key}={path}: no such file")
    return p


def check_landmarks_model(path, key: str = "data.dataset.landmarks_model") -> Path:
    """The dlib landmark model that ``data.dataset.align=ffhq`` needs: found (or downloaded
    where allowed) now, not after the generator is loaded."""
    from rls.weights import MissingWeightsError, resolve_weights

    try:
        return resolve_weights("dlib_landmarks68", path)
    except MissingWeightsError as err:
        raise PreflightError(f"{key}={path}: {err}") from err


def check_prior_path(path, key: str = "prior.path") -> Path:
    """A flow file for ``prior.path``; a Lightning ``.ckpt`` (train_flow.py's resumable
    training state) is refused with the path of the ``flow.safetensors`` to pass instead."""
    p = check_checkpoint_file(path, key)
    if p.suffix == ".ckpt":
        candidates = [p.parent / "flow.safetensors", p.parent.parent / "flow.safetensors"]
        found = next((c for c in candidates if c.is_file()), None)
        where = (
            f"pass {key}={found}"
            if found
            else f"pass the flow.safetensors that train_flow.py writes beside its checkpoints/ "
            f"folder ({candidates[1]}: not there yet; training may be unfinished)"
        )
        raise PreflightError(
            f"{key}={path}: a Lightning training checkpoint (optimiser state for resuming "
            f"train_flow.py), not a flow file; {where}"
        )
    return p


def image_sizes(root: Path) -> Counter:
    """``Counter({(width, height): count})`` of the readable images in ``root`` (headers)."""
    from rls.data.images import entry_problem, image_size, list_images

    sizes: Counter = Counter()
    for _, path in list_images(root):
        if entry_problem(path) is None:
            try:
                sizes[image_size(path)] += 1
            except Exception:  # unreadable: the dataset records it as a failed row
                continue
    return sizes


def check_flow_training(flow: Mapping, flow_training: Mapping) -> None:
    """The flow-training recipe (``flow_training.*``): steps, sizes and rates that can train."""
    from rls.flows.recipe import FlowRecipe, RecipeError

    try:
        FlowRecipe.from_settings(dict(flow), dict(flow_training))
    except RecipeError as err:
        raise PreflightError(str(err)) from None


def check_lr_sizes(root: Path, lr_side: int, scale: int, resolution: int, key: str) -> Counter:
    """Sizes of the LR images in ``root`` against the side the search needs.

    None of the right size: :class:`PreflightError` naming the sizes found and the setting
    to change. Some: they run, the others become failed rows (a warning says how many).
    """
    sizes = image_sizes(root)
    if not sizes:
        return sizes
    right = sizes.get((lr_side, lr_side), 0)
    found = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common())
    if right == 0:
        (w, h), _ = sizes.most_common(1)[0]
        fixes = []
        if w == h and resolution % w == 0:
            fixes.append(f"scale={resolution // w} (makes {w}x{w} LR inputs)")
        fixes.append(f"{key.rsplit('.', 1)[0]}.resolution={lr_side} (resize them)")
        if w == h:
            fixes.append(f"a generator of resolution {w * scale}")
        raise PreflightError(
            f"{key}={root}: the LR images are {found}, but the generator's resolution "
            f"{resolution} / scale={scale} needs {lr_side}x{lr_side}; set {' or '.join(fixes)}"
        )
    if right < sum(sizes.values()):
        log.warning(
            "%s: LR images of sizes %s; only the %dx%d ones (generator resolution %d / scale=%d)"
            " are restored, the others become failed rows",
            root,
            found,
            lr_side,
            lr_side,
            resolution,
            scale,
        )
    return sizes


# ----------------------------------------------------------------------------------------------
# an evaluation config


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


# ----------------------------------------------------------------------------------------------
# plain settings: each documented key of configs/evaluate.yaml and its groups


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
