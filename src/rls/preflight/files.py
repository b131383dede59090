"""Files and folders an evaluation reads: data folders, checkpoints, the landmark model, a
prior, the sizes of LR images."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from rls.preflight.errors import PreflightError, log


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
