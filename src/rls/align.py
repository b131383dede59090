"""FFHQ face alignment for arbitrary photos, and pasting a restored face back.

StyleGAN face generators only model faces cropped the FFHQ way: eyes and mouth at fixed
positions in the square. FFHQ (Karras et al. 2019, the dataset's ``recreate_aligned_images``)
derives an oriented square from 68-point landmarks: its axis ``x`` runs along the eye line
tilted by the eye-to-mouth direction, its side is the larger of 4× the eye distance and 3.6×
the eye-to-mouth distance, and its centre sits 10% of the way from the eye midpoint to the
mouth midpoint. PULSE and the RLS authors use the same crop, with dlib's 68 landmarks.

:func:`ffhq_quad` is that geometry; :func:`warp_quad` resamples the oriented square into an
image (antialiased, reflect-padded where the square leaves the photo); :func:`paste_back`
undoes it, blending a restored face into the original photo. :class:`DlibLandmarks` finds
the landmarks with dlib (a registry wheel, ``dlib-bin``): its face detector is built in, its
68-point shape model is a download handled like every other weight file
(:mod:`rls.weights`: cache, offline message naming the file, local-path option).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

# dlib's 68-point scheme (iBUG 300-W): the index ranges FFHQ's crop reads.
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54

# Larger than one output pixel per source pixel, Pillow's QUAD transform (bilinear, no
# antialiasing) would alias: shrink first by an integer factor, as FFHQ's script does.
SUPERSAMPLE = 2
FEATHER = 0.05  # paste_back: the blend ramps over this fraction of the square's side


class NoFaceError(ValueError):
    """No face was found in a photo (it becomes a failed row naming the file)."""


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop square for 68 landmarks ``[68, 2]`` (x, y in pixels).

    Returns its corners ``[4, 2]`` in the order top-left, bottom-left, bottom-right,
    top-right of the aligned image (the order Pillow's QUAD transform takes).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected 68 (x, y) landmarks, got shape {lm.shape}")
    eye_left, eye_right = lm[LEFT_EYE].mean(0), lm[RIGHT_EYE].mean(0)
    eye_mid = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_mid = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) / 2
    eye_to_mouth = mouth_mid - eye_mid
    # x: the eye line, tilted towards the perpendicular of the eye-to-mouth direction.
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    norm = np.hypot(*x)
    if norm < 1e-9:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    half = max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    x = x / norm * half
    y = np.array([-x[1], x[0]])  # x turned by +90° in image coordinates (y points down)
    c = eye_mid + 0.1 * eye_to_mouth
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_side(quad: np.ndarray) -> float:
    """The side of the crop square in photo pixels (how much detail the face really has)."""
    quad = np.asarray(quad, dtype=np.float64)
    return float(np.hypot(*(quad[3] - quad[0])))


def warp_quad(image: Image.Image, quad: np.ndarray, size: int) -> Image.Image:
    """Resample the oriented square ``quad`` of ``image`` into a ``size``² image.

    Antialiased (an integer pre-shrink, then a supersampled bilinear warp reduced with
    Lanczos); where the square leaves the photo, the photo is mirrored (FFHQ also blurs
    that border; mirroring alone keeps the code short and the face untouched).
    """
    quad = np.asarray(quad, dtype=np.float64)
    shrink = int(np.floor(quad_side(quad) / size / 2))
    if shrink > 1:
        image = image.reduce(shrink)
        quad = quad / shrink
    image, quad = _reflect_pad(image, quad)
    big = size * SUPERSAMPLE
    warped = image.transform(
        (big, big), Image.Transform.QUAD, tuple(quad.ravel()), Image.Resampling.BILINEAR
    )
    return warped.resize((size, size), Image.Resampling.LANCZOS)


def _reflect_pad(image: Image.Image, quad: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Mirror the photo's borders far enough that ``quad`` (plus a margin) lies inside."""
    w, h = image.size
    lo = np.floor(quad.min(0)) - 2
    hi = np.ceil(quad.max(0)) + 2
    left, top = int(max(0, -lo[0])), int(max(0, -lo[1]))
    right, bottom = int(max(0, hi[0] - w)), int(max(0, hi[1] - h))
    if not (left or top or right or bottom):
        return image, quad
    array = np.asarray(image)
    pad = [(top, bottom), (left, right)] + [(0, 0)] * (array.ndim - 2)
    # numpy's "symmetric" mode allows pads wider than the image (it repeats the mirror).
    padded = np.pad(array, pad, mode="symmetric")
    return Image.fromarray(padded), quad + np.array([left, top], dtype=np.float64)


def paste_back(original: Image.Image, restored: Image.Image, quad: np.ndarray) -> Image.Image:
    """The original photo with ``restored`` (an aligned face) warped back into ``quad``.

    The inverse of :func:`warp_quad`: the square's corners map to ``quad``'s; the face is
    blended in with a mask that ramps over :data:`FEATHER` of the side, so no seam shows.
    """
    quad = np.asarray(quad, dtype=np.float64)
    n = restored.size[0]
    # Affine map from original-photo coordinates to restored-image coordinates, fitted on
    # three corners (the quad is a square, so the fourth agrees).
    src = quad[:3]
    dst = np.array([[0.0, 0.0], [0.0, n], [n, n]])
    A = np.linalg.solve(np.c_[src, np.ones(3)], dst)  # [3, 2]: (x, y, 1) @ A = (u, v)
    coeffs = tuple(np.r_[A[:, 0], A[:, 1]])
    size = original.size
    face = restored.convert(original.mode).transform(
        size, Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC
    )
    ramp = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / max(FEATHER * n, 1.0)
    ramp = np.clip(ramp, 0.0, 1.0)
    mask = Image.fromarray((np.outer(ramp, ramp) * 255).round().astype(np.uint8), "L")
    mask = mask.transform(size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return Image.composite(face, original, mask)


@dataclass(frozen=True)
class Aligned:
    """A face cropped the FFHQ way, with the square it came from (for :func:`paste_back`)."""

    image: Image.Image
    quad: np.ndarray


class DlibLandmarks:
    """68 landmarks of the largest face in a photo: dlib's HOG detector + shape model.

    ``model_path``: the ``shape_predictor_68_face_landmarks.dat`` file, or a directory
    holding it; ``None`` looks in the weight caches and downloads it when allowed
    (:func:`rls.weights.resolve_weights`).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, allow_download=None):
        import dlib

        from rls.weights import resolve_weights

        self._detector = dlib.get_frontal_face_detector()
        self._model_path = model_path
        self._allow_download = allow_download
        self._predictor = None
        self._dlib = dlib
        self._resolve = resolve_weights

    def _shape_model(self):
        if self._predictor is None:
            path = self._resolve("dlib_landmarks68", self._model_path, self._allow_download)
            self._predictor = self._dlib.shape_predictor(str(path))
        return self._predictor

    def __call__(self, image: Image.Image) -> np.ndarray:
        """``[68, 2]`` landmarks of the largest face; :class:`NoFaceError` if there is none."""
        array = np.asarray(image.convert("RGB"))
        faces = self._detector(array, 1)  # upsample once: finds faces down to ~40 px
        if len(faces) == 0:
            raise NoFaceError("no face found")
        face = max(faces, key=lambda r: r.width() * r.height())
        shape = self._shape_model()(array, face)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


class FFHQAligner:
    """Photo → FFHQ-aligned ``size``² face, keeping the crop square for pasting back."""

    def __init__(self, size: int, landmarks=None):
        self.size = size
        self.landmarks = landmarks if landmarks is not None else DlibLandmarks()

    def __call__(self, image: Image.Image) -> Aligned:
        quad = ffhq_quad(self.landmarks(image))
        return Aligned(warp_quad(image, quad, self.size), quad)
