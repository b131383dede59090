"""Render one HR image through every corruption (rows) and scale (columns) as a labelled grid.

    .venv/bin/python benchmarks/degradation_grid.py     # writes docs/degradations.png
    .venv/bin/python benchmarks/degradation_grid.py --generator tiny --size 256
    .venv/bin/python benchmarks/degradation_grid.py --generator ffhq-1024 --size 1024

By default the image is a synthetic face-like test pattern made here (smooth shading,
sharp edges, a fine grating): the offline tiny generator is untrained and its samples
have no edges, which hides what the blurs and the codec do. Every LR image is made by
``Degradation.observe`` (the physical process, noise seeded by the image id) at the
paper's settings and shown enlarged with nearest-neighbour pixels. The motion blur
kernel is scaled to the image size (49 px at 1024², the paper's setting).
"""

from __future__ import annotations

import argparse
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rls.degradations import build_degradation  # noqa: E402
from rls.seeding import seeds_for  # noqa: E402

ROWS = [
    ("none", "none"),
    ("gaussian_noise", "gaussian_noise"),
    ("salt_pepper", "salt_pepper"),
    ("gaussian_blur", "gaussian_blur"),
    ("motion_blur", "motion_blur"),
    ("jpeg", "jpeg"),
    ("noise_blur", ["gaussian_blur", "gaussian_noise"]),
]


def face_pattern(size: int) -> torch.Tensor:
    """A smooth, face-like RGB test image [1, 3, size, size] in [0, 1]."""
    t = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(t, t, indexing="ij")

    def soft(d: torch.Tensor, width: float = 0.012) -> torch.Tensor:
        """1 inside (d < 0), 0 outside, with a thin antialiased edge."""
        return torch.sigmoid(-d / width)

    def ellipse(cx, cy, rx, ry):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 - 1

    img = torch.stack([0.55 + 0.25 * y, 0.65 + 0.1 * x, 0.8 - 0.2 * y])  # background gradient
    layers = [
        (soft(ellipse(0, -0.15, 0.72, 0.75)), (0.25, 0.16, 0.1)),  # hair
        (soft(ellipse(0, 0.08, 0.56, 0.72)), (0.93, 0.74, 0.62)),  # face
        (soft(ellipse(-0.22, -0.05, 0.13, 0.06)), (0.97, 0.97, 0.97)),  # eyes
        (soft(ellipse(0.22, -0.05, 0.13, 0.06)), (0.97, 0.97, 0.97)),
        (soft(ellipse(-0.22, -0.05, 0.05, 0.05)), (0.2, 0.3, 0.5)),  # irises
        (soft(ellipse(0.22, -0.05, 0.05, 0.05)), (0.2, 0.3, 0.5)),
        (soft(ellipse(-0.22, -0.19, 0.15, 0.025)), (0.3, 0.2, 0.12)),  # brows
        (soft(ellipse(0.22, -0.19, 0.15, 0.025)), (0.3, 0.2, 0.12)),
        (soft(ellipse(0, 0.45, 0.2, 0.05)), (0.75, 0.3, 0.3)),  # mouth
    ]
    for mask, colour in layers:
        img = img * (1 - mask) + mask * torch.tensor(colour)[:, None, None]
    shade = 1 - 0.15 * soft(ellipse(0.05, 0.22, 0.05, 0.12))  # nose shadow
    img = img * shade
    grating = 0.5 + 0.5 * torch.sign(torch.sin(math.pi * (x + y) * size / 16))  # 8-px period
    corner = (x > 0.6) & (y > 0.6)
    img = torch.where(corner, 0.15 + 0.7 * grating.expand(3, -1, -1), img)
    return img.clamp(0, 1)[None]


def generator_sample(source: str, size: int, seed: int) -> torch.Tensor:
    from rls.generators import load_generator

    kwargs = {"img_resolution": size} if source == "tiny" else {}
    G = load_generator(source, **kwargs)
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        img = (G(z) + 1) / 2
    return F.interpolate(img, size=(size, size), mode="area").clamp(0, 1)


def render(image: torch.Tensor, scales: list[int], out: Path, image_id: str) -> None:
    size = image.shape[-1]
    seeds = seeds_for([image_id], salt="degradation")
    motion = max(3, 2 * round(49 * size / 1024 / 2) + 1)  # odd, 49 at 1024²
    fig, axes = plt.subplots(
        len(ROWS), len(scales) + 1, figsize=(1.9 * (len(scales) + 1), 1.95 * len(ROWS))
    )
    for r, (label, corruption) in enumerate(ROWS):
        params = {"kernel_size": motion} if label == "motion_blur" else {}
        for c, scale in enumerate([1, *scales]):
            D = build_degradation(scale if scale > 1 else 1, corruption, **params)
            y = D.observe(image, seeds).clamp(0, 1)
            shown = F.interpolate(y, size=(size, size), mode="nearest")
            ax = axes[r, c]
            ax.imshow(shown[0].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(
                    "HR (x1)" if scale == 1 else f"x{scale}  ({size // scale}²)", fontsize=9
                )
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
        detail = build_degradation(1, corruption, **params).describe().split("| ", 1)[-1]
        detail = detail if label != "none" else "bicubic_pulse only"
        axes[r, 0].set_xlabel(textwrap.fill(detail, 42), fontsize=5.5)
    fig.suptitle(
        f"Degradation.observe at the paper's settings, {size}² input, PULSE bicubic downsampler",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default=None, help="'tiny', a checkpoint path or name")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/degradations.png"))
    args = parser.parse_args()
    if args.generator:
        image = generator_sample(args.generator, args.size, args.seed)
        image_id = f"{args.generator}-seed{args.seed}"
    else:
        image, image_id = face_pattern(args.size), "face_pattern"
    scales = [s for s in args.scales if args.size // s >= 8]  # keep LR images of 8² and up
    render(image, scales, args.out, image_id)


if __name__ == "__main__":
    main()
