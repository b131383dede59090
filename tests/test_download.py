"""Known checkpoints, the cache, checked atomic downloads and the offline error.

Downloads are exercised against a real HTTP server on localhost (no internet); the offline
case uses a localhost port nobody listens on.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import re
import socket
import threading
from pathlib import Path

import pytest

from rls.generators import build_tiny, save_generator
from rls.generators import download as dl
from rls.generators.checkpoints import CheckpointError, load_checkpoint


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "generators"


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` over HTTP on localhost for the duration of a test."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def spec_for(data: bytes, url: str, name="test-net", filename="net.pkl", pin=True):
    return dl.KnownCheckpoint(
        name=name,
        url=url,
        filename=filename,
        description="test",
        sha256=hashlib.sha256(data).hexdigest() if pin else None,
        size=len(data) if pin else None,
    )


def test_known_names_include_ffhq_1024_and_256_with_well_formed_pins():
    assert {"ffhq-1024", "ffhq-256"} <= set(dl.KNOWN_CHECKPOINTS)
    for spec in dl.KNOWN_CHECKPOINTS.values():
        assert spec.url.startswith("https://") and spec.url.rsplit("/", 1)[-1] in spec.filename
        assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert (spec.sha256 is None) == (spec.size is None)


def test_cache_dir_follows_rls_cache(cache):
    assert dl.cache_dir() == cache


def test_offline_error_names_file_url_path_and_local_override(monkeypatch, cache):
    url = closed_port_url("stylegan2-ffhq-config-f.pkl")
    spec = dl.KNOWN_CHECKPOINTS["ffhq-1024"]
    monkeypatch.setitem(
        dl.KNOWN_CHECKPOINTS, "ffhq-1024", spec_for(b"x", url, "ffhq-1024", spec.filename)
    )
    with pytest.raises(CheckpointError) as err:
        load_checkpoint("ffhq-1024")
    message = str(err.value)
    assert spec.filename in message and url in message
    assert str(cache / spec.filename) in message
    assert "generator=local generator.source=" in message
    assert not cache.exists() or not any(cache.iterdir())  # no partial file left


def test_download_is_atomic_and_checked(server, cache):
    root, base = server
    data = b"checkpoint bytes " * 1000
    (root / "net.pkl").write_bytes(data)
    target = dl.download(f"{base}/net.pkl", cache / "net.pkl", spec_for(data, f"{base}/net.pkl"))
    assert target.read_bytes() == data
    assert not list(cache.glob("*.part"))


def test_download_with_wrong_hash_leaves_nothing(server, cache):
    root, base = server
    (root / "net.pkl").write_bytes(b"tampered!")
    spec = spec_for(b"original!", f"{base}/net.pkl")  # same size, other bytes
    with pytest.raises(CheckpointError, match=r"SHA-256 [0-9a-f]{64} differs from the pinned"):
        dl.download(spec.url, cache / "net.pkl", spec)
    assert not (cache / "net.pkl").exists() and not list(cache.glob("*.part"))


def test_cached_file_of_wrong_size_is_refused(cache):
    spec = dl.KNOWN_CHECKPOINTS["ffhq-1024"]
    cache.mkdir(parents=True)
    (cache / spec.filename).write_bytes(b"half a download")
    with pytest.raises(CheckpointError, match=r"15 bytes, but 'ffhq-1024'.*truncated"):
        dl.resolve("ffhq-1024")


def test_unpinned_known_checkpoint_warns(monkeypatch, cache, caplog):
    spec = spec_for(b"abc", closed_port_url("u.pkl"), "unpinned-net", "u.pkl", pin=False)
    monkeypatch.setitem(dl.KNOWN_CHECKPOINTS, spec.name, spec)
    cache.mkdir(parents=True)
    (cache / "u.pkl").write_bytes(b"abc")
    with caplog.at_level(logging.WARNING):
        assert dl.resolve("unpinned-net") == cache / "u.pkl"
    assert "no pinned SHA-256" in caplog.text


def test_known_name_from_cache_loads_without_network(monkeypatch, cache):
    G = build_tiny()
    cache.mkdir(parents=True)
    path = cache / "tiny.safetensors"
    save_generator(G, path)
    spec = spec_for(path.read_bytes(), closed_port_url("tiny.safetensors"), "tiny-net", path.name)
    monkeypatch.setitem(dl.KNOWN_CHECKPOINTS, spec.name, spec)
    loaded = load_checkpoint("tiny-net")  # the URL is dead: only the cache can serve it
    assert loaded.init_kwargs == G.init_kwargs


def test_url_source_downloads_into_cache(server, cache, caplog):
    root, base = server
    G = build_tiny()
    save_generator(G, root / "g.safetensors")
    with caplog.at_level(logging.WARNING):
        loaded = load_checkpoint(f"{base}/g.safetensors")
    assert len(list(cache.glob("url-*-g.safetensors"))) == 1 and "unpinned URL" in caplog.text
    assert loaded.init_kwargs == G.init_kwargs


def test_local_path_never_needs_network_and_missing_path_is_named(tmp_path):
    path = tmp_path / "g.pkl"
    path.write_bytes(b"\x80\x04")
    assert dl.resolve(path) == path
    with pytest.raises(CheckpointError, match=r"nothere\.pkl: no such checkpoint file.*ffhq-1024"):
        dl.resolve(tmp_path / "nothere.pkl")


def test_downloads_can_be_disabled(cache):
    with pytest.raises(CheckpointError, match=r"(?s)downloads disabled.*put it at exactly"):
        dl.resolve("ffhq-256", allow_download=False)


def test_generator_configs_name_known_checkpoints_and_local_loads_a_path(tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    configs = Path(__file__).parents[1] / "configs" / "generator"
    for name in ("ffhq1024", "ffhq256"):
        assert OmegaConf.load(configs / f"{name}.yaml").source in dl.KNOWN_CHECKPOINTS
    G = build_tiny()
    save_generator(G, tmp_path / "g.safetensors")
    cfg = OmegaConf.load(configs / "local.yaml")
    cfg.source = str(tmp_path / "g.safetensors")  # generator=local generator.source=PATH
    assert instantiate(cfg).init_kwargs == G.init_kwargs
