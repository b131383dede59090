"""The 100 real faces that scikit-image ships (``skimage.data.lfw_subset``), at 32².

``lfw_subset()`` holds 200 grayscale 25×25 arrays from Labeled Faces in the Wild: the first
100 are faces (roughly aligned crops), the last 100 are not. The split is fixed by index and
never shuffled: faces 0-89 train the generator, faces 90-99 are held out (restoration and
the coverage measurement). Images are resized 25² -> ``resolution``² with antialiased bicubic
interpolation (``torch.nn.functional.interpolate``, ``align_corners=False``), clamped to
[0, 1], and the grey channel is replicated to 3 channels, so that the generator, LPIPS, the
metrics and the reports all see ordinary RGB images (R = G = B).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

N_FACES = 100
TRAIN_INDICES = tuple(range(0, 90))
HELDOUT_INDICES = tuple(range(90, 100))
SPLITS = {"train": TRAIN_INDICES, "heldout": HELDOUT_INDICES, "all": tuple(range(N_FACES))}
SOURCE_RESOLUTION = 25


def lfw_faces(split: str = "train", resolution: int = 32, channels: int = 3) -> torch.Tensor:
    """The faces of ``split`` (``train`` 0-89, ``heldout`` 90-99, ``all``) as a float tensor
    ``[N, channels, resolution, resolution]`` in [0, 1], in index order."""
    if split not in SPLITS:
        raise ValueError(f"unknown LFW split {split!r}; choose one of {sorted(SPLITS)}")
    try:
        from skimage.data import lfw_subset
    except ImportError as err:  # pragma: no cover - scikit-image is a dependency
        raise ImportError("data=lfw needs scikit-image (pip install scikit-image)") from err
    faces = torch.as_tensor(lfw_subset()[:N_FACES], dtype=torch.float32)
    x = faces[list(SPLITS[split])].unsqueeze(1)
    if resolution != SOURCE_RESOLUTION:
        x = F.interpolate(x, size=resolution, mode="bicubic", align_corners=False, antialias=True)
    return x.clamp(0, 1).expand(-1, channels, -1, -1).contiguous()


class LFWDataset(Dataset):
    """HR targets from the LFW faces of ``split`` (default: the 10 held-out faces 90-99);
    ``n``: only the first ``n`` of them in index order (``None``: all).

    Records ``{"image_id": "lfw090", "hr": [channels, resolution, resolution] in [0, 1]}``,
    the same as an image folder's, ids by LFW index. ``resolution`` and ``channels`` come
    from the generator (``data=lfw`` with any generator; 32² is where the shipped one lives).
    """

    def __init__(
        self,
        split: str = "heldout",
        n: int | None = None,
        resolution: int = 32,
        channels: int = 3,
    ):
        if channels not in (1, 3):
            raise ValueError(f"LFW faces are grey: channels must be 1 or 3, got {channels}")
        if n is not None and not 1 <= n <= len(SPLITS.get(split, ())):
            size = len(SPLITS.get(split, ()))
            raise ValueError(f"data.dataset.n={n}: the LFW split {split!r} has {size} faces")
        self.split = split
        self.indices = SPLITS[split][:n]
        self.images = lfw_faces(split, resolution=resolution, channels=channels)[
            : len(self.indices)
        ]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def image_ids(self) -> list[str]:
        return [f"lfw{i:03d}" for i in self.indices]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} LFW faces")
        return {"image_id": self.image_ids[index], "hr": self.images[index].clone()}
