"""Synthetic landmarks for alignment tests: a frontal face centred in the photo.

A stand-in for dlib's detector with known geometry (the detector itself is tested on a blank
photo); a photo of one flat colour has no face.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from rls.align import NoFaceError


class CentredFace:
    """68 landmarks of a frontal face whose FFHQ crop is the photo's central square of side
    ``0.8 ·`` its shorter side; a flat photo raises :class:`NoFaceError`."""

    def __call__(self, photo: Image.Image) -> np.ndarray:
        array = np.asarray(photo, dtype=np.float64)
        if array.std() < 1.0:
            raise NoFaceError("no face found")
        w, h = photo.size
        half = 0.4 * min(w, h)  # FFHQ's half side = 2 x eye distance here
        eye = half / 4  # eye distance 2·eye = half / 2
        lm = np.zeros((68, 2))
        lm[36:42] = (-eye, 0.0)
        lm[42:48] = (eye, 0.0)
        lm[48], lm[54] = (-eye / 2, eye), (eye / 2, eye)
        return lm + np.array([w / 2, h / 2 - 0.1 * eye])
