"""Measure the shipped generator=lfw32: samples, memorisation, coverage (docs/generator_lfw32.md).

    .venv/bin/python benchmarks/lfw32_generator.py                 # the shipped lfw32
    .venv/bin/python benchmarks/lfw32_generator.py --generator runs/.../generator_ema.safetensors

- samples: a grid of 64 samples (seeded z, ``noise_mode='const'``, no truncation), beside the
  90 training and the 10 held-out faces;
- memorisation: for each of ``--n`` samples, the pixel L2 distance (RMSE on [0, 1] grey
  images) to its nearest training face, against the same distance for each held-out face
  (real faces the generator never saw). Samples much closer to training faces than held-out
  faces are would be copies; the figure shows samples beside their nearest training faces;
- diversity: the mean pairwise RMSE of 100 samples over that of the 100 real LFW faces
  (1 = as varied as the data; a collapsed generator scores near 0);
- realism in a feature space available offline: the Fréchet distance between dlib's 128-d
  face descriptors of ``--n-fd`` samples and of the 100 real faces (FD-dlib: the FID formula
  on dlib's face-recognition features, *not* the paper's Inception FID), beside the same
  distance between two halves of the real faces (what 50 against 50 real faces give), and
  dlib's face-detection rate on samples and on real faces;
- coverage: plain W+ inversion (``method=wplus``: the RLS stage with every regulariser off,
  here with no downsampling, scale 1) of the 10 held-out faces and of 10 training faces
  (0, 9, ..., 81): the reconstruction PSNR on each. A generator that covers faces it never
  saw reconstructs held-out faces about as well as training ones.

Writes docs/<prefix>_*.png (``--prefix``, default generator_lfw32) and ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from rls.data.lfw import HELDOUT_INDICES, lfw_faces
from rls.degradations.degradation import build_degradation
from rls.generators import load_generator
from rls.metrics import psnr
from rls.search import build_method, search
from rls.seeding import seeds_for

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PROBE = tuple(range(0, 90, 9))  # 10 training faces spread over the split


def grey(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1, keepdim=True)


@torch.no_grad()
def sample(G, n: int, seed: int, batch: int = 250) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen)
    out = [G(z[i : i + batch], noise_mode="const") for i in range(0, n, batch)]
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


def nearest(queries: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSE to the nearest training image, its index) for each query (grey, [0, 1])."""
    q = grey(queries).flatten(1)
    t = grey(train).flatten(1)
    d = torch.cdist(q, t) / q.shape[1] ** 0.5
    dist, idx = d.min(dim=1)
    return dist, idx


def diversity_ratio(samples: torch.Tensor, real: torch.Tensor) -> dict:
    from rls.lit.gan_module import pairwise_rmse

    s, r = float(pairwise_rmse(grey(samples))), float(pairwise_rmse(grey(real)))
    return {
        "samples_pairwise_rmse": round(s, 4),
        "real_pairwise_rmse": round(r, 4),
        "ratio": round(s / r, 3),
        "n_samples": samples.shape[0],
        "n_real": real.shape[0],
    }


def descriptors(images: torch.Tensor):
    """dlib's face descriptor of each aligned 32² face in the whole-image box (every image
    is a crop like the training faces), and whether dlib's detector finds a face."""
    import dlib
    import numpy as np

    from rls.metrics.faces import FaceMetrics, FaceModels, to_uint8_rgb

    faces = FaceMetrics(FaceModels.pretrained(allow_download=False))
    out, found = [], []
    for img in images:
        array = to_uint8_rgb(img)
        box = dlib.rectangle(0, 0, array.shape[1] - 1, array.shape[0] - 1)
        shape, _ = faces.landmarks(array, box)
        out.append(faces.descriptor(array, shape))
        windows = faces.detect(array)
        found.append(bool(windows and windows[0][0] > 0))
    return torch.from_numpy(np.stack(out)).double(), float(np.mean(found))


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fréchet distance of Gaussians fitted to two feature sets (the FID formula)."""
    import numpy as np
    from scipy import linalg

    mu1, mu2 = a.mean(0).numpy(), b.mean(0).numpy()
    s1, s2 = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def invert(G, targets: torch.Tensor, ids: list[str], steps: int, start_samples: int):
    method = build_method("wplus", steps=steps, start_samples=start_samples)
    D = build_degradation(1)
    result = search(method, G, targets, D, seeds_for(ids, "lfw32-coverage"))
    return result.images, psnr(result.images, targets)


def save_grid(images: torch.Tensor, path: Path, nrow: int, upscale: int = 2) -> None:
    import torchvision

    grid = torchvision.utils.make_grid(images, nrow=nrow, padding=1, pad_value=1.0)
    grid = torch.nn.functional.interpolate(grid[None], scale_factor=upscale, mode="nearest")[0]
    torchvision.utils.save_image(grid, path)


def histogram(samples_d, heldout_d, train_d, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=110)
    ax = fig.add_subplot()
    bins = torch.linspace(0, max(samples_d.max(), heldout_d.max()).item() * 1.05, 40)
    ax.hist(samples_d.numpy(), bins=bins.numpy(), density=True, alpha=0.6,
            label=f"samples (n={len(samples_d)})")  # fmt: skip
    for i, d in enumerate(heldout_d.tolist()):
        ax.axvline(d, color="C3", lw=1, label="held-out faces" if i == 0 else None)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("RMSE to the nearest training face (grey, [0, 1])")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("memorisation: distance to the nearest of the 90 training faces", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="lfw32")
    parser.add_argument("--n", type=int, default=2000, help="samples for memorisation")
    parser.add_argument("--steps", type=int, default=500, help="W+ inversion steps (RLS's)")
    parser.add_argument("--start-samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/lfw32_generator.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prefix", default="generator_lfw32", help="docs figure name prefix")
    parser.add_argument("--n-fd", type=int, default=1000, help="samples for FD-dlib")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)

    G = load_generator(args.generator)
    train = lfw_faces("train")
    heldout = lfw_faces("heldout")

    # samples
    samples = sample(G, args.n, args.seed)
    save_grid(samples[:64], docs / f"{args.prefix}_samples.png", nrow=8)
    save_grid(torch.cat([train, heldout]), docs / f"{args.prefix}_faces.png", nrow=10)
    colour = (samples - grey(samples)).abs().mean().item()  # how far from grey (R = G = B)
    real = torch.cat([train, heldout])
    diversity = diversity_ratio(samples[:100], real)
    fake_desc, fake_found = descriptors(samples[: args.n_fd])
    real_desc, real_found = descriptors(real)
    halves = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    realism = {
        "fd_dlib_samples_vs_real": round(frechet(fake_desc, real_desc), 4),
        "fd_dlib_real_half_vs_half": round(
            frechet(real_desc[halves[:50]], real_desc[halves[50:]]), 4
        ),
        "fd_dlib_samples50_vs_real": round(frechet(fake_desc[:50], real_desc[halves[50:]]), 4),
        "n_samples": int(fake_desc.shape[0]),
        "detected_samples": round(fake_found, 3),
        "detected_real": round(real_found, 3),
    }

    # memorisation
    s_dist, s_idx = nearest(samples, train)
    h_dist, _ = nearest(heldout, train)
    # leave-one-out distances of the training faces among themselves (the data's own spacing)
    t = grey(train).flatten(1)
    dt = torch.cdist(t, t) / t.shape[1] ** 0.5
    dt.fill_diagonal_(float("inf"))
    t_dist = dt.min(dim=1).values
    histogram(s_dist, h_dist, t_dist, docs / f"{args.prefix}_memorisation.png")
    show = torch.argsort(s_dist)[:8].tolist() + torch.randperm(args.n)[:8].tolist()
    pairs = torch.stack([samples[show], train[s_idx[show]]], dim=1).flatten(0, 1)
    # rows: 8 closest samples (with their nearest training face), then 8 random ones
    save_grid(pairs, docs / f"{args.prefix}_nearest.png", nrow=8)

    # coverage
    t0 = time.perf_counter()
    probe = train[list(TRAIN_PROBE)]
    held_ids = [f"lfw{i:03d}" for i in HELDOUT_INDICES]
    train_ids = [f"lfw{i:03d}" for i in TRAIN_PROBE]
    rec_h, psnr_h = invert(G, heldout, held_ids, args.steps, args.start_samples)
    rec_t, psnr_t = invert(G, probe, train_ids, args.steps, args.start_samples)
    inversion_seconds = time.perf_counter() - t0
    save_grid(torch.cat([heldout, rec_h, probe, rec_t]), docs / f"{args.prefix}_inversion.png",
              nrow=10)  # fmt: skip

    def stats(x: torch.Tensor) -> dict:
        return {"median": round(x.median().item(), 4), "mean": round(x.mean().item(), 4),
                "min": round(x.min().item(), 4), "max": round(x.max().item(), 4)}  # fmt: skip

    record = {
        "generator": args.generator,
        "samples": {"n": args.n, "seed": args.seed, "mean_abs_colour": round(colour, 4)},
        "diversity": diversity,
        "realism_dlib_descriptors": realism,
        "memorisation_rmse_to_nearest_training_face": {
            "samples": stats(s_dist),
            "held_out_faces": stats(h_dist),
            "training_faces_leave_one_out": stats(t_dist),
            "samples_closer_than_closest_held_out": int((s_dist < h_dist.min()).sum()),
            "distinct_nearest_training_faces": int(s_idx.unique().numel()),
        },
        "coverage_wplus_inversion_psnr_db": {
            "held_out": stats(psnr_h),
            "training_probe": stats(psnr_t),
            "held_out_per_face": [round(v, 2) for v in psnr_h.tolist()],
            "training_probe_per_face": [round(v, 2) for v in psnr_t.tolist()],
            "steps": args.steps,
            "start_samples": args.start_samples,
            "seconds": round(inversion_seconds, 1),
        },
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"torch {torch.__version__}, {args.threads} thread(s)",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
