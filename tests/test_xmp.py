import os
import shutil
import subprocess

import pytest
from PIL import Image

from pano360.errors import InvalidInputError, OutputExistsError
from pano360.io import pano_geometry_for_size, read_panorama_metadata, save_panorama_image
from pano360.io.atomic import atomic_write_text


@pytest.mark.parametrize(
    "width, height, top",
    [(1024, 512, 0), (2048, 512, 256), (3072, 512, 512), (64, 32, 0)],
)
def test_geometry_for_size(width, height, top):
    geometry = pano_geometry_for_size(width, height)
    assert geometry.full_width == width and geometry.full_height == width // 2
    assert (geometry.cropped_width, geometry.cropped_height) == (width, height)
    assert (geometry.cropped_left, geometry.cropped_top) == (0, top)
    assert geometry.is_full_sphere == (width == 2 * height)


def test_taller_than_two_to_one_has_no_sphere():
    with pytest.raises(InvalidInputError, match="taller than 2:1"):
        pano_geometry_for_size(512, 512)


def expected_fields(width, height):
    full_height = width // 2
    return {
        "ProjectionType": "equirectangular",
        "UsePanoramaViewer": True,
        "FullPanoWidthPixels": width,
        "FullPanoHeightPixels": full_height,
        "CroppedAreaImageWidthPixels": width,
        "CroppedAreaImageHeightPixels": height,
        "CroppedAreaLeftPixels": 0,
        "CroppedAreaTopPixels": (full_height - height) // 2,
        "PoseHeadingDegrees": 0.0,
    }


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("width, height", [(128, 64), (256, 64)])
def test_metadata_reads_back(tmp_path, suffix, width, height):
    image = Image.new("RGB", (width, height), (10, 120, 200))
    path = save_panorama_image(image, tmp_path / f"pano{suffix}")
    metadata = read_panorama_metadata(path)
    for key, value in expected_fields(width, height).items():
        assert metadata[key] == value, key
    with Image.open(path) as reopened:  # still a valid image
        assert reopened.size == (width, height)


def exiftool_or_skip():
    exe = shutil.which("exiftool")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("exiftool is missing in CI; .ci/run installs libimage-exiftool-perl")
        pytest.skip("exiftool not installed (apt-get install libimage-exiftool-perl)")
    return exe


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("width, height", [(128, 64), (256, 64)])
def test_exiftool_reads_metadata(tmp_path, suffix, width, height):
    exe = exiftool_or_skip()
    path = save_panorama_image(Image.new("RGB", (width, height)), tmp_path / f"pano{suffix}")
    out = subprocess.run([exe, "-s", "-XMP-GPano:all", str(path)], capture_output=True, text=True, check=True)
    tags = dict(line.split(":", 1) for line in out.stdout.splitlines())
    tags = {key.strip(): value.strip() for key, value in tags.items()}
    for key, value in expected_fields(width, height).items():
        if isinstance(value, float):
            assert float(tags[key]) == value, (key, tags)
        else:
            assert tags[key] == str(value), (key, tags)


def test_no_overwrite_by_default(tmp_path):
    path = tmp_path / "pano.png"
    save_panorama_image(Image.new("RGB", (64, 32)), path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_panorama_image(Image.new("RGB", (64, 32), (255, 0, 0)), path)
    assert path.read_bytes() == before
    save_panorama_image(Image.new("RGB", (64, 32), (255, 0, 0)), path, overwrite=True)
    assert path.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["pano.png"]  # no temporary files left


def test_atomic_write_leaves_no_temp_on_refusal(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    with pytest.raises(OutputExistsError):
        atomic_write_text(tmp_path / "a.json", "[]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_unsupported_extension(tmp_path):
    with pytest.raises(InvalidInputError, match=".png, .jpg"):
        save_panorama_image(Image.new("RGB", (64, 32)), tmp_path / "pano.webp")


def test_written_files_get_the_usual_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "a.json", "{}")
    mask = os.umask(0o022)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
