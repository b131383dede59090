"""Where dlib's face metrics mean something (docs/face_metrics.md).

    .venv/bin/python benchmarks/face_metrics.py

- detection rate by image size: the 100 LFW faces of scikit-image (25² originals) and the
  astronaut photo's FFHQ crop, resized to each side, scored against themselves;
- identity at 32²: dlib's descriptor distance between different people (every pair of the
  100 LFW faces; each face is a different photo, mostly of different people) and between a
  face and a degraded copy of itself (Gaussian noise σ 0.05, and a ×4 bicubic down-up), so
  the 0.6 same-person threshold can be read against what 32² allows;
- landmark distance of a face against its copy shifted by one pixel, by size.

Writes benchmarks/results/face_metrics.json.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from rls.align import DlibLandmarks, ffhq_quad, warp_quad
from rls.data.lfw import lfw_faces
from rls.metrics.faces import SAME_PERSON, FaceMetrics, FaceModels, to_uint8_rgb

ROOT = Path(__file__).resolve().parents[1]
SIZES = (16, 20, 24, 32, 48, 64, 128, 256)


def astronaut_crop(size: int) -> torch.Tensor:
    photo = Image.fromarray(data.astronaut())
    crop = warp_quad(photo, ffhq_quad(DlibLandmarks(allow_download=False)(photo)), size)
    return torch.from_numpy(np.asarray(crop)).permute(2, 0, 1).float()[None] / 255


def main() -> dict:
    t0 = time.time()
    faces = FaceMetrics(FaceModels.pretrained(allow_download=False))
    out: dict = {"machine": f"{platform.machine()}, torch {torch.__version__}", "by_size": {}}
    for size in SIZES:
        lfw = lfw_faces("all", resolution=size)
        ast = astronaut_crop(size)
        # below MIN_SIDE FaceMetrics reports NaN; the raw detector rate is still measured
        rates = []
        for img in torch.cat([lfw, ast]):
            windows = faces.detect(to_uint8_rgb(img))
            rates.append(bool(windows and windows[0][0] > 0))
        shifted = faces(torch.roll(lfw, 1, dims=3), lfw)["landmark_distance"]
        out["by_size"][size] = {
            "lfw_detected": float(np.mean(rates[:-1])),
            "astronaut_detected": bool(rates[-1]),
            "lfw_landmark_distance_1px_shift_median": _median(shifted),
        }
    lfw = lfw_faces("all", resolution=32)
    descriptors = []
    for img in lfw:  # each face's descriptor in its own detected box
        array = to_uint8_rgb(img)
        found = [(s, r) for s, r in faces.detect(array) if s > 0]
        if found:
            shape, _ = faces.landmarks(array, found[0][1])
            descriptors.append(faces.descriptor(array, shape))
    d = torch.from_numpy(np.stack(descriptors))
    upper = torch.triu(torch.ones(len(d), len(d), dtype=torch.bool), diagonal=1)
    different = torch.cdist(d, d)[upper]
    gen = torch.Generator().manual_seed(0)
    noisy = (lfw + 0.05 * torch.randn(lfw.shape, generator=gen)[:, :1]).clamp(0, 1)
    downup = F.interpolate(
        F.interpolate(lfw, scale_factor=0.25, mode="bicubic", antialias=True),
        size=32, mode="bicubic",
    ).clamp(0, 1)  # fmt: skip
    same_noise = faces(noisy, lfw)["identity_distance"]
    same_downup = faces(downup, lfw)["identity_distance"]
    out["identity_32"] = {
        "faces_with_a_descriptor": len(descriptors),
        "different_pairs": int(different.numel()),
        "different_median": float(different.median()),
        "different_p05": float(different.quantile(0.05)),
        "different_below_threshold": float((different < SAME_PERSON).float().mean()),
        "noise_0.05_median": _median(same_noise),
        "noise_0.05_below_threshold": _below(same_noise),
        "downup_x4_median": _median(same_downup),
        "downup_x4_below_threshold": _below(same_downup),
    }
    out["seconds"] = round(time.time() - t0, 1)
    path = ROOT / "benchmarks" / "results" / "face_metrics.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return out


def _median(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.median()) if x.numel() else float("nan")


def _below(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float((x < SAME_PERSON).float().mean()) if x.numel() else float("nan")


if __name__ == "__main__":
    main()
