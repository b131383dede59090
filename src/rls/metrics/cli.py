"""``python -m rls.metrics fid-stats DIR --resolution N``: a real set's Inception features
for FID/KID, computed once and cached by set and protocol (:mod:`rls.fid_stats`)."""

from __future__ import annotations

import argparse
import json
import sys

from rls.fid_stats import reference_features
from rls.metrics.networks import build_inception


def fid_stats_main(argv: list[str] | None = None) -> int:
    """The ``fid-stats`` command: 0 when the features are cached, 1 without Inception."""
    parser = argparse.ArgumentParser(
        prog="python -m rls.metrics fid-stats",
        description="Inception features of an HR image set for FID/KID, computed once and "
        "cached by set and protocol (use it with metrics.fid_reference=DIR)",
    )
    parser.add_argument("root", help="folder of HR images (the real set)")
    parser.add_argument("--resolution", type=int, required=True, help="the generator's side")
    parser.add_argument("--weights", default=None, help="Inception weights file")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    feature = build_inception(args.weights)
    if feature is None:
        return 1  # the warning named the file to get
    features, proto, path = reference_features(args.root, feature, args.resolution, args.batch_size)
    print(f"{path}: {features.shape[0]} images x {features.shape[1]} features")
    print(json.dumps(proto, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["fid-stats"]:
        print("usage: python -m rls.metrics fid-stats DIR --resolution N [--weights FILE]")
        return 2
    return fid_stats_main(argv[1:])
