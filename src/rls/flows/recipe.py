"""What makes a trained W flow: the generator's mapping network and the training recipe.

Both name the flow's directory in the flow cache, ``<cache>/<generator key>-<recipe key>/``,
so ``python train_flow.py`` and ``python evaluate.py`` find the same flow for the same
generator and recipe instead of training it twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from torch import nn

FLOW_FILE = "flow.safetensors"
SCHEDULES = ("authors", "cosine", "plateau", "constant")


class RecipeError(ValueError):
    """A flow-training setting that cannot train; the message starts with
    ``flow_training.<key>=<value>:``."""


def check_training_settings(**settings) -> None:
    """Refuse settings that cannot train a flow, naming the key, before anything is built:
    no steps, no samples, a batch larger than an epoch, a rate that is not positive..."""

    def refuse(key: str, why: str) -> None:
        raise RecipeError(f"flow_training.{key}={settings[key]!r}: {why}")

    def number(key: str) -> float | None:
        value = settings.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            refuse(key, "must be a number")
        return value

    for key in ("max_steps", "batch_size", "epoch_size", "val_size", "patience"):
        value = number(key)
        if value is not None and (value != int(value) or value < 1):
            refuse(key, "must be a whole number >= 1 (a flow trained for no steps or on no "
                   "samples is untrained, and would be used as if trained)")  # fmt: skip
    for key in ("lr",):
        value = number(key)
        if value is not None and not (0 < value < math.inf):
            refuse(key, "the learning rate must be a finite number > 0")
    for key in ("weight_decay", "gradient_clip_val"):
        value = number(key)
        if value is not None and not (0 <= value < math.inf):
            refuse(key, "must be a finite number >= 0 (0: off)")
    batch, epoch = settings.get("batch_size"), settings.get("epoch_size")
    if batch is not None and epoch is not None and batch > epoch:
        refuse("batch_size", f"exceeds flow_training.epoch_size={epoch} (one epoch would "
               "have no full batch)")  # fmt: skip
    schedule = settings.get("schedule")
    if schedule is not None and schedule not in SCHEDULES:
        refuse("schedule", f"unknown schedule; choose one of {', '.join(SCHEDULES)}")


@dataclass
class FlowRecipe:
    """The flow architecture (``WFlow`` keyword arguments) and every training setting that
    changes the trained flow; devices, loggers and threads do not belong here."""

    flow: dict = field(default_factory=lambda: {"family": "maf_paper"})
    max_steps: int = 50000
    batch_size: int = 512
    epoch_size: int = 32768
    val_size: int = 8192
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 1e-6
    schedule: str = "authors"
    patience: int = 20
    gradient_clip_val: float = 1.0

    def __post_init__(self):
        self.flow = dict(self.flow)
        for f in fields(self):  # 1e-3 and 0.001, "512" and 512: one recipe, one key
            if f.name == "flow":
                continue
            value = getattr(self, f.name)
            try:
                converted = type(f.default)(value)
            except (TypeError, ValueError):
                raise RecipeError(
                    f"flow_training.{f.name}={value!r}: expected a {type(f.default).__name__}"
                ) from None
            if isinstance(converted, int) and converted != value and not isinstance(value, str):
                raise RecipeError(f"flow_training.{f.name}={value!r}: must be a whole number")
            setattr(self, f.name, converted)
        check_training_settings(**self.training_kwargs())

    @classmethod
    def from_settings(cls, flow: dict, settings: dict) -> FlowRecipe:
        """From a flow config and a mapping of settings (extra keys are ignored)."""
        known = {f.name for f in fields(cls)} - {"flow"}
        return cls(flow=flow, **{k: v for k, v in settings.items() if k in known})

    def training_kwargs(self) -> dict:
        """The training settings as ``rls.lit.fit_flow`` keyword arguments."""
        kwargs = asdict(self)
        kwargs.pop("flow")
        return kwargs

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def generator_key(G: nn.Module) -> str:
    """A content hash of what the flow models: the mapping network's weights (and ``w_avg``)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(G.mapping.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def flow_cache_dir(cache: str | Path, G: nn.Module, recipe: FlowRecipe) -> Path:
    """``<cache>/<generator key>-<recipe key>``: where the flow for ``G`` and ``recipe`` lives."""
    return Path(cache) / f"{generator_key(G)}-{recipe.key()}"
