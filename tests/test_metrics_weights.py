"""The shared weight fetcher: offline folder first, cache, checked downloads; never the real network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pano360.errors import ModelLoadError
from pano360.nets import weights
from pano360.nets.weights import REGISTRY, WeightFile, fetch_weights


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PANO360_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PANO360_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _no_download(url, destination):
    raise AssertionError(f"tried to download {url}")


def test_registry_names_official_files_and_urls():
    assert REGISTRY["vgg16"].url == "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert REGISTRY["alexnet"].url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert REGISTRY["vgg19"].url == "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
    assert REGISTRY["inception_fid"].filename == "pt_inception-2015-12-05-6726825d.pth"
    assert REGISTRY["lpips_vgg"].url.endswith("/lpips/weights/v0.1/vgg.pth")
    for entry in REGISTRY.values():
        if entry.sha256_prefix:
            assert entry.sha256_prefix in entry.filename


def test_offline_folder_is_used_first(tmp_path):
    folder = tmp_path / "offline"
    folder.mkdir()
    (folder / "vgg.pth").write_bytes(b"heads")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "vgg.pth").write_bytes(b"cached")
    assert fetch_weights("lpips_vgg", folder, downloader=_no_download) == folder / "vgg.pth"


def test_cache_dir_from_environment(tmp_path):
    assert weights.cache_dir() == tmp_path / "cache"
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "vgg19-dcbb9e9d.pth").write_bytes(b"x")
    assert fetch_weights("vgg19", downloader=_no_download) == tmp_path / "cache" / "vgg19-dcbb9e9d.pth"


def test_missing_file_in_weights_dir_is_an_error_without_download(tmp_path):
    folder = tmp_path / "offline"
    folder.mkdir()
    with pytest.raises(ModelLoadError) as info:
        fetch_weights("alexnet", folder, downloader=_no_download)
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message and REGISTRY["alexnet"].url in message
    assert "--weights-dir" in message and str(folder) in message


def test_offline_environment_refuses_downloads(monkeypatch):
    monkeypatch.setenv("PANO360_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="downloads are off"):
        fetch_weights("inception_fid", downloader=_no_download)


def test_file_without_a_direct_link_points_to_its_page():
    with pytest.raises(ModelLoadError) as info:
        fetch_weights("faed", downloader=_no_download)
    assert "faed.ckpt" in str(info.value) and "PanFusion" in str(info.value)


def _fake_entry(monkeypatch, content: bytes, digest: str | None) -> WeightFile:
    entry = WeightFile("fake", "fake-weights.pth", "https://example.invalid/fake-weights.pth", "a test file",
                       sha256_prefix=digest)
    monkeypatch.setitem(REGISTRY, "fake", entry)
    return entry


def test_download_goes_to_the_cache_after_its_checksum(tmp_path, monkeypatch):
    content = b"weights!"
    _fake_entry(monkeypatch, content, hashlib.sha256(content).hexdigest()[:8])
    calls = []

    def downloader(url, destination: Path):
        calls.append(url)
        destination.write_bytes(content)

    path = fetch_weights("fake", downloader=downloader)
    assert path == tmp_path / "cache" / "fake-weights.pth" and path.read_bytes() == content
    assert calls == ["https://example.invalid/fake-weights.pth"]
    assert fetch_weights("fake", downloader=_no_download) == path  # cached now
    assert [p.name for p in path.parent.iterdir()] == ["fake-weights.pth"]  # no .part left


def test_checksum_mismatch_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    _fake_entry(monkeypatch, b"x", "00000000")

    def downloader(url, destination: Path):
        destination.write_bytes(b"corrupted")

    with pytest.raises(ModelLoadError, match="SHA-256"):
        fetch_weights("fake", downloader=downloader)
    assert list((tmp_path / "cache").iterdir()) == []


def test_failed_download_names_the_url(monkeypatch):
    _fake_entry(monkeypatch, b"x", None)

    def downloader(url, destination: Path):
        raise OSError("connection refused")

    with pytest.raises(ModelLoadError, match="https://example.invalid/fake-weights.pth"):
        fetch_weights("fake", downloader=downloader)


def test_unreadable_checkpoint_says_how_to_convert(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="weights_only"):
        weights.load_checkpoint(bad)
