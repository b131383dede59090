"""The set-level side: :class:`RestorationMetrics` accumulates the per-image means plus FID
and KID over a run's images (torchmetrics, DDP-synced).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from rls.metrics.networks import (
    LPIPS_BACKBONES,
    _in_dir,
    build_inception,
    build_lpips,
    build_niqe,
)
from rls.metrics.per_image import PER_IMAGE_NAMES, per_image_metrics

log = logging.getLogger("rls.metrics")


class _FID(FrechetInceptionDistance):
    """FID that reports NaN (not an exception) when a set has fewer than two images.

    ``reference`` (features ``[N, F]`` of a fixed real set, :mod:`rls.fid_stats`): the real
    side at compute time, after the states are synced, so DDP never counts it twice.
    """

    reference: Tensor | None = None

    def compute(self) -> Tensor:
        if self.reference is None:
            return self._compute()
        names = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")
        kept = [getattr(self, n) for n in names]
        ref = self.reference.double().to(kept[0].device)
        self.real_features_sum = ref.sum(0)
        self.real_features_cov_sum = ref.T @ ref
        self.real_features_num_samples = torch.tensor(ref.shape[0], device=ref.device)
        try:
            return self._compute()
        finally:
            for name, value in zip(names, kept):
                setattr(self, name, value)

    def _compute(self) -> Tensor:
        if min(int(self.real_features_num_samples), int(self.fake_features_num_samples)) < 2:
            log.warning("FID needs at least two images per set; reported as NaN")
            return torch.tensor(math.nan)
        return super().compute()


class _KID(KernelInceptionDistance):
    """KID with the subset size clamped to the number of images and seeded subset draws."""

    reference: Tensor | None = None  # as _FID's: the real side at compute time

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = seed

    def compute(self) -> tuple[Tensor, Tensor]:
        # in float64, as torch-fidelity: float32 kernels lose ~1e-4 of KID to rounding
        kept = self.real_features, self.fake_features
        real = [self.reference] if self.reference is not None else _as_list(kept[0])
        self.real_features = [f.double() for f in real]
        self.fake_features = [f.double() for f in _as_list(kept[1])]
        try:
            return self._compute()
        finally:
            self.real_features, self.fake_features = kept

    def _compute(self) -> tuple[Tensor, Tensor]:
        n = min(
            sum(len(f) for f in _as_list(self.real_features)),
            sum(len(f) for f in _as_list(self.fake_features)),
        )
        if n < 2:
            log.warning("KID needs at least two images per set; reported as NaN")
            return torch.tensor(math.nan), torch.tensor(math.nan)
        configured = self.subset_size
        self.subset_size = min(configured, n)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                return super().compute()
        finally:
            self.subset_size = configured


class _SharedFeatures(nn.Module):
    """The feature network FID and KID both call: the second call on the same tensor
    object reuses the first one's features instead of running the network again."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.num_features = _num_features(net)
        self._cache: list[tuple[Tensor, Tensor]] = []

    def forward(self, x: Tensor) -> Tensor:
        for seen, features in self._cache:
            if seen is x:
                return features
        features = self.net(x)
        self._cache.append((x, features))
        return features

    def clear(self) -> None:
        self._cache.clear()


def _num_features(feature: nn.Module) -> int:
    if hasattr(feature, "num_features"):
        return int(feature.num_features)
    with torch.no_grad():
        return feature(torch.zeros(1, 3, 64, 64)).shape[-1]


def _as_list(state) -> list[Tensor]:
    return state if isinstance(state, list) else [state]


class RestorationMetrics(nn.Module):
    """Means of the per-image metrics plus FID and KID, accumulated over images, DDP-synced.

    Each mean is a torchmetrics ``MeanMetric`` (NaN-ignoring); FID/KID are torchmetrics'
    with an injected feature network (``feature=None`` skips them). Every rank updates the
    same fixed set of metrics, so ``compute()`` syncs safely; metrics that never saw a
    finite value are left out of its result.
    """

    def __init__(
        self,
        lpips_nets: Mapping[str, nn.Module] | None = None,
        feature: nn.Module | None = None,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        seed: int = 0,
        niqe: nn.Module | None = None,
        reference: Tensor | None = None,
        faces: Callable | None = None,
    ):
        super().__init__()
        self.lpips_nets = nn.ModuleDict(dict(lpips_nets or {}))
        self.niqe = niqe
        self.faces = faces  # rls.metrics.faces.FaceMetrics (dlib; not an nn.Module)
        names = list(PER_IMAGE_NAMES) + [f"lpips_{n}" for n in self.lpips_nets]
        self.means = nn.ModuleDict({n: MeanMetric(nan_strategy="ignore") for n in names})
        if isinstance(feature, _SharedFeatures):  # e.g. another instance's ``fid.inception``
            feature = feature.net
        self.feature, self.fid, self.kid = feature, None, None
        if feature is not None:
            # FID and KID share one wrapper, so the feature network runs once per image.
            shared = _SharedFeatures(feature)
            self.fid = _FID(feature=shared, reset_real_features=True, normalize=False)
            with warnings.catch_warnings():  # KID's note that it keeps all features in memory
                warnings.simplefilter("ignore", UserWarning)
                self.kid = _KID(
                    feature=shared,
                    subsets=kid_subsets,
                    subset_size=kid_subset_size,
                    normalize=False,
                    seed=seed,
                )
            # a fixed real set (rls.fid_stats): the HR images of the run are not added
            self.fid.reference = self.kid.reference = reference
        self.reference = reference

    @classmethod
    def pretrained(
        cls,
        lpips: tuple[str, ...] = ("alex", "vgg"),
        fid: bool = True,
        weights_dir: str | os.PathLike | None = None,
        allow_download: bool | None = None,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        seed: int = 0,
        niqe: bool = True,
        faces: bool = True,
    ) -> RestorationMetrics:
        """The paper's suite with pretrained networks, and the face metrics; missing files
        are skipped with a warning."""
        from rls.metrics.faces import FaceMetrics, FaceModels

        nets = {}
        for name in lpips:
            net = build_lpips(name, _in_dir(weights_dir, LPIPS_BACKBONES[name]), allow_download)
            if net is not None:
                nets[name] = net
        feature = (
            build_inception(_in_dir(weights_dir, "inception"), allow_download) if fid else None
        )
        niqe_net = build_niqe(_in_dir(weights_dir, "niqe"), allow_download) if niqe else None
        models = FaceModels.pretrained(weights_dir, allow_download) if faces else None
        face_metrics = FaceMetrics(models) if models is not None else None
        return cls(nets, feature, kid_subset_size, kid_subsets, seed, niqe_net, faces=face_metrics)

    @torch.no_grad()
    def update(
        self,
        sr: Tensor,
        hr: Tensor | None,
        y: Tensor | None = None,
        D: Callable[[Tensor], Tensor] | None = None,
        w_hat: Tensor | None = None,
        w_true: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Accumulate one batch; returns its per-image metrics (for a results table)."""
        values = per_image_metrics(
            sr, hr, y, D, self.lpips_nets, w_hat, w_true, self.niqe, self.faces
        )
        nan = torch.full((sr.shape[0],), math.nan, device=sr.device)
        for name, mean in self.means.items():
            mean.update(values.get(name, nan))
        if self.fid is not None and hr is not None:
            self.update_set_level(sr, hr)
        return values

    @torch.no_grad()
    def update_set_level(self, sr: Tensor, hr: Tensor) -> None:
        """Add images to FID and KID only (e.g. those restored before a resume, read back
        from their files, so the set-level values cover every image of the run)."""
        if self.fid is None:
            return
        real, fake = hr.float().clamp(0, 1).to(sr.device), sr.float().clamp(0, 1)
        for metric in (self.fid, self.kid):
            if self.reference is None:
                metric.update(real, real=True)
            metric.update(fake, real=False)
        self.fid.inception.clear()

    def compute(self) -> dict[str, Tensor]:
        """Set-level values: ``<metric>`` means, ``fid``, ``kid_mean``, ``kid_std``."""
        result = {name: mean.compute() for name, mean in self.means.items()}
        if self.fid is not None:
            result["fid"] = self.fid.compute()
            result["kid_mean"], result["kid_std"] = self.kid.compute()
        return {k: v for k, v in result.items() if not torch.isnan(v).item()}

    def reset(self) -> None:
        for mean in self.means.values():
            mean.reset()
        if self.fid is not None:
            self.fid.reset()
            self.kid.reset()
