"""Regenerate tests/data/reference/niqe_pyiqa.json: pyiqa's NIQE on scikit-image's photographs.

pyiqa is not a dependency of this project (see src/rls/niqe.py for why); run this with a
throwaway install of it on the path, e.g.

    pip install --no-deps --target /tmp/pyiqa pyiqa==0.1.16 opencv-python-headless \
        huggingface_hub httpx2 httpcore2 truststore
    PYTHONPATH=/tmp/pyiqa:src python scripts/make_niqe_reference.py \
        --params niqe_pris_params.npz --out tests/data/reference/niqe_pyiqa.json

``--params`` is the pristine model of rls.weights (``niqe``); it is handed to pyiqa as the
``.mat`` it reads (the same two arrays), so both sides use identical parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.io
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from niqe_cases import CASES, case_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", required=True, help="niqe_pris_params.npz")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import pyiqa
    from pyiqa.archs.niqe_arch import NIQE

    with np.load(args.params, allow_pickle=False) as data:
        mu, cov = data["mu_pris_param"], data["cov_pris_param"]
    with tempfile.TemporaryDirectory() as tmp:
        mat = Path(tmp) / "niqe_params.mat"
        scipy.io.savemat(mat, {"mu_prisparam": mu, "cov_prisparam": cov})
        metric = NIQE(pretrained_model_path=str(mat)).double()
    scores = {}
    for case in CASES:
        x = case_image(case)
        with torch.no_grad():
            scores[case] = float(metric(x.double()).reshape(-1)[0])
        print(f"{case:28s} {scores[case]:.6f}")
    Path(args.out).write_text(
        json.dumps(
            {
                "source": f"pyiqa {pyiqa.__version__} pyiqa.archs.niqe_arch.NIQE, float64, CPU",
                "params": Path(args.params).name,
                "scores": scores,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
