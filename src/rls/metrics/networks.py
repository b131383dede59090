"""The pretrained networks of the metrics: LPIPS (AlexNet, VGG16 backbones) and the
Inception-v3 features of FID/KID, loaded offline through :mod:`rls.weights`; a missing
file skips its metric with one warning naming the file to get.
"""

from __future__ import annotations

import io
import logging
import os

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import NoTrainInceptionV3

from rls.generators.formats_common import refused_global
from rls.weights import MissingWeightsError, resolve_weights

log = logging.getLogger("rls.metrics")

LPIPS_BACKBONES = {"alex": "alexnet", "vgg": "vgg16"}


# ----------------------------------------------------------------------------------------------
# LPIPS


class LPIPS(nn.Module):
    """LPIPS distance ``[B]`` on [0, 1] images, torchmetrics' network with offline weights.

    The linear calibration layers ship inside torchmetrics; the ImageNet backbone (AlexNet or
    VGG16) is loaded from the torchvision checkpoint file given. torchmetrics' public
    ``LearnedPerceptualImagePatchSimilarity`` always downloads the backbone, hence the use of
    its inner ``_NoTrainLpips`` built with a random backbone that we then fill ourselves.
    """

    def __init__(self, net: str = "alex", backbone_file: str | os.PathLike | None = None):
        super().__init__()
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        if net not in LPIPS_BACKBONES:
            raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
        self.net_name = net
        self.net = _NoTrainLpips(net=net, pretrained=True, pnet_rand=True)
        if backbone_file is not None:
            self.load_backbone(backbone_file)

    def load_backbone(self, path: str | os.PathLike) -> None:
        """Fill the backbone from a torchvision state dict (``features.<i>.*`` keys)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{path}: not a readable torch checkpoint ({err})") from err
        # LPIPS slices keep torchvision's layer indices: slice<k>.<i>.weight <- features.<i>.weight
        target = self.net.net.state_dict()
        mapped = {}
        for key, value in target.items():
            _, index, param = key.split(".", 2)
            source = f"features.{index}.{param}"
            if source not in state:
                raise ValueError(f"{path}: missing {source} for the LPIPS {self.net_name} backbone")
            if state[source].shape != value.shape:
                raise ValueError(
                    f"{path}: {source} has shape {tuple(state[source].shape)}, "
                    f"expected {tuple(value.shape)} ({self.net_name} backbone)"
                )
            mapped[key] = state[source]
        self.net.net.load_state_dict(mapped, strict=True)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = _as_rgb(a).clamp(0, 1), _as_rgb(b).clamp(0, 1)
        return self.net(a, b, normalize=True).reshape(a.shape[0])


def build_lpips(
    net: str = "alex",
    weights_path: str | os.PathLike | None = None,
    allow_download: bool | None = None,
) -> LPIPS | None:
    """LPIPS with its ImageNet backbone, or ``None`` and one warning if the file is missing."""
    try:
        path = resolve_weights(LPIPS_BACKBONES[net], weights_path, allow_download)
    except MissingWeightsError as err:
        log.warning("LPIPS (%s) skipped: %s", net, err)
        return None
    return LPIPS(net, path)


# ----------------------------------------------------------------------------------------------
# Inception features for FID / KID


class InceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3 pool features (2048) of [0, 1] float images.

    Quantises to uint8 as the reference FID implementations do before resizing to 299².
    """

    num_features = 2048

    def __init__(self, weights_file: str | os.PathLike):
        super().__init__()
        # torch-fidelity reads the file with torch.load(weights_only=False), which would run
        # any code a tampered file holds: read it weights-only here and hand over a clean copy.
        try:
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
        except Exception as err:
            name = refused_global(err)
            why = f"it asks for the global '{name}'" if name else f"{type(err).__name__}: {err}"
            raise ValueError(
                f"{weights_file}: refused as Inception weights ({why}); nothing in it was"
                " executed. Delete it (it is downloaded again) or pass another weights_dir"
            ) from None
        self.weights_name = os.path.basename(os.fspath(weights_file))  # the FID protocol
        clean = io.BytesIO()
        torch.save(state, clean)
        clean.seek(0)
        self.inception = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(self.num_features)],
            feature_extractor_weights_path=clean,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = (_as_rgb(x).clamp(0, 1) * 255).round().to(torch.uint8)
        return self.inception(x).reshape(x.shape[0], -1)


def build_inception(
    weights_path: str | os.PathLike | None = None, allow_download: bool | None = None
) -> InceptionFeatures | None:
    """Inception features for FID/KID, or ``None`` and one warning if the file is missing."""
    try:
        path = resolve_weights("inception", weights_path, allow_download)
    except MissingWeightsError as err:
        log.warning("FID and KID skipped: %s", err)
        return None
    return InceptionFeatures(path)


def build_niqe(weights_path: str | os.PathLike | None = None, allow_download: bool | None = None):
    """NIQE with its pristine model, or ``None`` and one warning if the file is missing."""
    from rls.niqe import NIQE, PARAMS_NAME

    try:
        path = resolve_weights(PARAMS_NAME, weights_path, allow_download)
    except MissingWeightsError as err:
        log.warning("NIQE skipped: %s", err)
        return None
    return NIQE.from_file(path)


def _in_dir(weights_dir, name: str):
    if weights_dir is None:
        return None
    from rls.weights import KNOWN_WEIGHTS

    path = os.path.join(weights_dir, KNOWN_WEIGHTS[name].filename)
    return path if os.path.isfile(path) else None


def _as_rgb(x: Tensor) -> Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
