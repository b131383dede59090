"""python -m rls.weights list / fetch: every file the project can use, what each enables,
fetched checksum-checked into one folder for an offline machine. Offline: the sources are
small stand-in files behind file:// URLs."""

import bz2
import hashlib

import pytest

from rls import weights
from rls.generators import download


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("RLS_CACHE", str(tmp_path / "rls_cache"))
    monkeypatch.delenv("RLS_WEIGHTS_DIR", raising=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    """Three small sources: a plain file (pinned), a .bz2 (unpinned), a generator (pinned)."""
    src = tmp_path / "online"
    src.mkdir()
    a, b, g = b"backbone bytes", b"landmark bytes", b"generator bytes"
    (src / "a.pth").write_bytes(a)
    (src / "b.dat.bz2").write_bytes(bz2.compress(b))
    (src / "g.pkl").write_bytes(g)
    monkeypatch.setattr(
        weights,
        "KNOWN_WEIGHTS",
        {
            "backbone": weights.WeightFile(
                "a.pth", (src / "a.pth").as_uri(), sha(a)[:8], "a backbone", enables="metric A"
            ),
            "landmarks": weights.WeightFile(
                "b.dat", (src / "b.dat.bz2").as_uri(), None, "landmarks", enables="feature B"
            ),
        },
    )
    gen = download.KnownCheckpoint(
        name="ffhq-1024",
        url=(src / "g.pkl").as_uri(),
        filename="g.pkl",
        description="a generator",
        sha256=sha(g),
        size=len(g),
        resolution=1024,
    )
    monkeypatch.setattr(download, "KNOWN_CHECKPOINTS", {"ffhq-1024": gen})
    return src


def test_fetch_gets_every_file_into_one_folder_checked(stand_ins, tmp_path, capsys):
    target = tmp_path / "offline_weights"
    with pytest.warns(UserWarning, match="without a pinned checksum"):
        assert weights.main(["fetch", "--dir", str(target)]) == 0
    assert sorted(p.name for p in target.iterdir()) == ["a.pth", "b.dat", "g.pkl"]
    assert (target / "b.dat").read_bytes() == b"landmark bytes"  # decompressed
    out = capsys.readouterr().out
    assert "3 of 3 present, 0 missing" in out
    # a second fetch downloads nothing
    (stand_ins / "a.pth").unlink()
    assert weights.main(["fetch", "--dir", str(target)]) == 0


def test_list_names_every_file_its_state_and_the_feature_it_enables(
    stand_ins, tmp_path, monkeypatch, capsys
):
    target = tmp_path / "w"
    target.mkdir()
    (target / "a.pth").write_bytes(b"backbone bytes")
    (target / "g.pkl").write_bytes(b"generator bytez")  # same size, other bytes
    monkeypatch.setenv("RLS_WEIGHTS_DIR", str(target))
    assert weights.main(["list"]) == 1
    out = capsys.readouterr().out
    rows = {e.name: e for e in weights.inventory()}
    assert rows["backbone"].status == "ok" and rows["backbone"].path == target / "a.pth"
    assert rows["landmarks"].status == "missing" and rows["landmarks"].path is None
    assert rows["ffhq-1024"].status == "bad checksum"
    assert "enables: metric A" in out and "enables: feature B" in out
    assert "enables: generator=ffhq1024: a generator" in out
    assert f"get: {(stand_ins / 'b.dat.bz2').as_uri()}" in out
    assert "2 of 3 present, 1 missing, 1 with a bad checksum" in out


def test_a_download_with_the_wrong_checksum_is_refused(stand_ins, tmp_path, capsys):
    (stand_ins / "a.pth").write_bytes(b"tampered")
    (stand_ins / "g.pkl").write_bytes(b"tampered bytes!")
    target = tmp_path / "w"
    assert weights.main(["fetch", "--dir", str(target), "backbone", "ffhq-1024"]) == 1
    out = capsys.readouterr().out
    assert "FAILED  backbone" in out and "FAILED  ffhq-1024" in out
    assert not (target / "a.pth").exists() and not (target / "g.pkl").exists()
    with pytest.raises(KeyError, match="unknown file name"):
        weights.fetch_all(target, ["nope"])


def test_a_generator_in_the_weights_folder_is_used_offline(stand_ins, tmp_path, monkeypatch):
    target = tmp_path / "w"
    weights.fetch_all(target, ["ffhq-1024"])
    monkeypatch.setenv("RLS_WEIGHTS_DIR", str(target))
    assert download.resolve("ffhq-1024", allow_download=False) == target / "g.pkl"


def test_the_real_listing_covers_every_known_file():
    entries = weights.inventory(verify=False)
    names = {e.name for e in entries}
    assert names == set(weights.KNOWN_WEIGHTS) | set(download.KNOWN_CHECKPOINTS)
    assert {"alexnet", "vgg16", "inception", "niqe", "dlib_landmarks68", "ffhq-1024"} <= names
    for e in entries:
        assert e.enables and e.source, e.name
