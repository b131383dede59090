"""What makes a trained W flow: the generator's mapping network and the training recipe.

Both name the flow's directory in the flow cache, ``<cache>/<generator key>-<recipe key>/``,
so ``python train_flow.py`` and ``python evaluate.py`` find the same flow for the same
generator and recipe instead of training it twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from torch import nn

FLOW_FILE = "flow.safetensors"


@dataclass
class FlowRecipe:
    """The flow architecture (``WFlow`` keyword arguments) and every training setting that
    changes the trained flow; devices, loggers and threads do not belong here."""

    flow: dict = field(default_factory=lambda: {"family": "maf_paper"})
    max_steps: int = 1500
    batch_size: int = 512
    epoch_size: int = 32768
    val_size: int = 8192
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 1e-6
    schedule: str = "cosine"
    patience: int = 10
    gradient_clip_val: float = 1.0

    def __post_init__(self):
        self.flow = dict(self.flow)
        for f in fields(self):  # 1e-3 and 0.001, "512" and 512: one recipe, one key
            if f.name != "flow":
                setattr(self, f.name, type(f.default)(getattr(self, f.name)))

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
