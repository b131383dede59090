"""The images NIQE is checked on: scikit-image's photographs, some degraded, as [1, C, H, W]
float tensors in [0, 1]. Shared by tests/test_niqe.py and scripts/make_niqe_reference.py."""

import numpy as np
import torch

# name[:transform]; transforms: noise (Gaussian σ 0.1, seed 0), blur (5×5 box), crop (120×100)
CASES = (
    "astronaut",
    "astronaut:noise",
    "astronaut:blur",
    "astronaut:crop",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "brick",
    "grass",
    "moon",
    "page",
    "hubble_deep_field",
)


def case_image(case: str) -> torch.Tensor:
    import skimage.data

    name, _, transform = case.partition(":")
    a = getattr(skimage.data, name)().astype(np.float64) / 255
    x = torch.from_numpy(a)
    x = x.permute(2, 0, 1)[None] if x.ndim == 3 else x[None, None]
    if transform == "noise":
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
        x = (x + 0.1 * noise).clamp(0, 1)
    elif transform == "blur":
        x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    elif transform == "crop":
        x = x[..., 200:320, 150:250]
    elif transform:
        raise ValueError(f"unknown transform {transform!r}")
    return x.float()
