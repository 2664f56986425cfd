"""``pano360 convert`` / ``pano360 info``: exports land in the right files, metadata is readable by
exiftool, bad input gives one clear line and leaves no partial outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from pano360 import geometry as g
from pano360.cli.main import main
from pano360.io import export
from pano360.io.images import read_panorama_metadata

# The colour of each axis direction: a panorama coloured by the nearest axis has a known colour at the
# centre of each cube face.
AXIS_COLOURS = {  # (axis, sign) -> RGB
    ("z", 1): (255, 0, 0),      # front: red
    ("x", 1): (0, 255, 0),      # right: green
    ("z", -1): (0, 0, 255),     # back: blue
    ("x", -1): (255, 255, 0),   # left: yellow
    ("y", 1): (255, 255, 255),  # up: white
    ("y", -1): (255, 0, 255),   # down: magenta
}
FRONT, RIGHT, BACK, LEFT, UP, DOWN = (AXIS_COLOURS[k] for k in
                                      [("z", 1), ("x", 1), ("z", -1), ("x", -1), ("y", 1), ("y", -1)])
EXPECTED = {
    "fbrlud": {"front": FRONT, "right": RIGHT, "back": BACK, "left": LEFT, "up": UP, "down": DOWN},
    "opengl": {"px": RIGHT, "nx": LEFT, "py": UP, "ny": DOWN, "pz": FRONT, "nz": BACK},
    # Unity's Skybox/6 Sided slots: Left is +X (the view to the right of the front), Right is -X.
    "unity": {"FrontTex": FRONT, "BackTex": BACK, "LeftTex": RIGHT, "RightTex": LEFT, "UpTex": UP,
              "DownTex": DOWN},
}


def axis_panorama(height: int = 64, width: int = 128) -> np.ndarray:
    d = g.equirect_directions(height, width, dtype=torch.float64).numpy()
    axis = np.abs(d).argmax(-1)
    sign = np.sign(np.take_along_axis(d, axis[..., None], -1)[..., 0])
    image = np.zeros((height, width, 3), np.uint8)
    for (name, s), colour in AXIS_COLOURS.items():
        image[(axis == "xyz".index(name)) & (sign == s)] = colour
    # a dark dot at lon 90°, lat 30° (right face, upper half) pins the face orientation
    lon, lat = (np.degrees(a.numpy()) for a in g.equirect_lonlat(height, width, dtype=torch.float64))
    image[(np.abs(lon - 90) < 6) & (np.abs(lat - 30) < 6)] = (20, 20, 20)
    return image


@pytest.fixture
def pano_png(tmp_path):
    path = tmp_path / "pano.png"
    Image.fromarray(axis_panorama()).save(path)
    return path


def centre_colour(path) -> tuple[int, ...]:
    image = np.asarray(Image.open(path).convert("RGB"))
    h, w = image.shape[:2]
    return tuple(int(v) for v in np.median(image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3), 0))


def files(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("convention", ["fbrlud", "opengl", "unity"])
def test_cube_faces_land_in_the_right_files(pano_png, tmp_path, convention):
    out = tmp_path / "out"
    assert main(["convert", str(pano_png), "--to", "cubemap", "--convention", convention, "-o", str(out),
                 "--face-size", "32", "--quiet"]) == 0
    expected = EXPECTED[convention]
    assert files(out) == {f"pano_{name}.png" for name in expected}
    for name, colour in expected.items():
        path = out / f"pano_{name}.png"
        assert Image.open(path).size == (32, 32)
        assert centre_colour(path) == colour, (convention, name)
    # orientation: the dark dot at lat +30° on the right face is in its upper half, centred left-right
    right = {"fbrlud": "right", "opengl": "px", "unity": "LeftTex"}[convention]
    image = np.asarray(Image.open(out / f"pano_{right}.png").convert("RGB")).sum(-1)
    rows, cols = np.nonzero(image < 150)
    assert rows.mean() < 14 and abs(cols.mean() - 15.5) < 2
    # faces are written with the usual permissions, not the temporary file's 0600
    assert (out / f"pano_{right}.png").stat().st_mode & 0o044


def test_cross_strip_and_views(pano_png, tmp_path):
    assert main(["convert", str(pano_png), "--to", "cross", "strip", "views", "--convention", "opengl",
                 "--face-size", "16", "--view", "90,0,60", "--view", "0,90", "--view-size", "30x40",
                 "--format", "jpg", "--quiet"]) == 0
    cross = np.asarray(Image.open(tmp_path / "pano_cross.jpg").convert("RGB")).astype(int)
    assert cross.shape == (48, 64, 3)
    cell = lambda col, row: tuple(np.median(cross[row * 16 + 4 : row * 16 + 12, col * 16 + 4 : col * 16 + 12]
                                            .reshape(-1, 3), 0))
    for (col, row), colour in zip(g.cubemap.DICE_CELLS, [FRONT, RIGHT, BACK, LEFT, UP, DOWN]):
        assert np.abs(np.subtract(cell(col, row), colour)).max() < 40
    assert np.abs(cross[:16, :16]).max() < 10  # empty corner of the cross
    strip = np.asarray(Image.open(tmp_path / "pano_strip.jpg").convert("RGB")).astype(int)
    assert strip.shape == (16, 96, 3)
    for i, colour in enumerate([RIGHT, LEFT, UP, DOWN, FRONT, BACK]):  # +X -X +Y -Y +Z -Z
        assert np.abs(np.median(strip[4:12, i * 16 + 4 : i * 16 + 12].reshape(-1, 3), 0) - colour).max() < 40
    view0 = tmp_path / "pano_view00.jpg"
    assert Image.open(view0).size == (40, 30)
    assert np.abs(np.subtract(centre_colour(view0), RIGHT)).max() < 40
    assert np.abs(np.subtract(centre_colour(tmp_path / "pano_view01.jpg"), UP)).max() < 40


@pytest.mark.parametrize("video_format", ["mp4", "gif"])
def test_flyaround_video(pano_png, tmp_path, video_format, capsys):
    from pano360.io.video import mp4_available

    if video_format == "mp4" and not mp4_available():
        if os.environ.get("CI"):
            pytest.fail("imageio-ffmpeg is missing: the test extra installs it")
        pytest.skip("imageio-ffmpeg not installed")
    assert main(["convert", str(pano_png), "--to", "video", "--video-format", video_format, "--frames", "6",
                 "--video-size", "32x48", "--fps", "12"]) == 0
    path = tmp_path / f"pano_flyaround.{video_format}"
    data = path.read_bytes()
    assert "6 frames" in capsys.readouterr().out
    if video_format == "mp4":
        assert data[4:8] == b"ftyp"
        import imageio_ffmpeg

        frames = list(imageio_ffmpeg.read_frames(str(path)))
        meta = frames[0]
        assert meta["size"] == (48, 32) and len(frames) - 1 == 6
    else:
        with Image.open(path) as gif:
            assert gif.format == "GIF" and gif.n_frames == 6 and gif.size == (48, 32)
            first = np.asarray(gif.convert("RGB")).astype(int)
        assert np.abs(first[16, 24] - FRONT).max() < 60  # frame 0 looks at yaw 0: the red front
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def _exiftool_gpano(path) -> dict:
    exiftool = shutil.which("exiftool")
    if not exiftool:
        if os.environ.get("CI"):
            pytest.fail("exiftool is missing: .ci/run installs libimage-exiftool-perl")
        pytest.skip("exiftool not installed")
    result = subprocess.run([exiftool, "-j", "-XMP-GPano:all", str(path)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)[0]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_add_metadata_in_place_is_read_by_exiftool(tmp_path, suffix):
    path = tmp_path / f"pano{suffix}"
    Image.fromarray(axis_panorama()).save(path)
    os.chmod(path, 0o640)
    pixels = np.asarray(Image.open(path)).copy()
    assert main(["convert", str(path), "--add-metadata", "--quiet"]) == 0
    assert main(["convert", str(path), "--add-metadata", "--quiet"]) == 0  # tagging twice replaces the packet
    tags = _exiftool_gpano(path)
    assert tags["ProjectionType"] == "equirectangular" and tags["UsePanoramaViewer"] in (True, "True")
    assert (tags["FullPanoWidthPixels"], tags["FullPanoHeightPixels"]) == (128, 64)
    assert (tags["CroppedAreaImageWidthPixels"], tags["CroppedAreaImageHeightPixels"]) == (128, 64)
    assert tags["CroppedAreaLeftPixels"] == 0 and tags["CroppedAreaTopPixels"] == 0
    assert "PoseHeadingDegrees" in tags
    assert np.array_equal(np.asarray(Image.open(path)), pixels)  # not re-encoded
    assert path.read_bytes().count(b"GPano:ProjectionType") == 1
    assert path.stat().st_mode & 0o777 == 0o640
    assert files(tmp_path) == {path.name}


def test_add_metadata_copy_and_band(tmp_path, capsys):
    strip = tmp_path / "strip.jpg"
    Image.fromarray(np.full((64, 512, 3), 128, np.uint8)).save(strip)
    before = strip.read_bytes()
    assert main(["convert", str(strip), "--add-metadata", "--metadata-out", str(tmp_path / "tagged.jpg")]) == 0
    assert strip.read_bytes() == before
    tags = _exiftool_gpano(tmp_path / "tagged.jpg")
    assert (tags["FullPanoWidthPixels"], tags["FullPanoHeightPixels"]) == (512, 256)
    assert tags["CroppedAreaImageHeightPixels"] == 64 and tags["CroppedAreaTopPixels"] == 96
    assert read_panorama_metadata(tmp_path / "tagged.jpg")["CroppedAreaTopPixels"] == 96
    capsys.readouterr()
    assert main(["info", str(tmp_path / "tagged.jpg")]) == 0
    assert "360° x 45° (cylindrical band" in capsys.readouterr().out


def _fails(argv, capsys, match: str):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("pano360 convert: error: "), err
    assert match in err, err
    return err


def test_bad_input_gives_one_line_and_no_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    _fails(["convert", str(text), "--to", "cubemap", "-o", str(out)], capsys, "not an image")
    _fails(["convert", str(tmp_path / "missing.png"), "--to", "cubemap", "-o", str(out)], capsys, "does not exist")
    _fails(["convert", str(tmp_path), "--to", "cubemap", "-o", str(out)], capsys, "not a file")
    good = tmp_path / "good.png"
    Image.fromarray(axis_panorama()).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    _fails(["convert", str(truncated), "--to", "cubemap", "-o", str(out)], capsys, "could not be decoded")
    square = tmp_path / "square.png"
    Image.new("RGB", (64, 64)).save(square)
    _fails(["convert", str(square), "--to", "cubemap", "-o", str(out)], capsys, "taller than 2:1")
    _fails(["convert", str(square), "--add-metadata"], capsys, "taller than 2:1")
    odd = tmp_path / "odd.png"
    Image.new("RGB", (129, 60)).save(odd)
    _fails(["convert", str(odd), "--to", "views", "-o", str(out)], capsys, "even width")
    for fov in ("0", "180", "-5", "200"):
        _fails(["convert", str(good), "--to", "views", "--view", f"0,0,{fov}", "-o", str(out)], capsys,
               "between 0 and 180")
    _fails(["convert", str(good), "--to", "video", "--video-fov", "180", "-o", str(out)], capsys, "between 0 and 180")
    _fails(["convert", str(good), "--to", "views", "--view", "a,b", "-o", str(out)], capsys, "YAW,PITCH")
    _fails(["convert", str(good), "--to", "cubemap", "--convention", "directx", "-o", str(out)], capsys,
           "unknown cubemap convention")
    _fails(["convert", str(good), "--to", "voxels", "-o", str(out)], capsys, "unknown --to target")
    _fails(["convert", str(good), "-o", str(out)], capsys, "nothing to do")
    _fails(["convert", str(good), "--to", "views", "--view-size", "0x10", "-o", str(out)], capsys, "out of range")
    _fails(["convert", str(good), "--to", "cubemap", "--face-size", "0", "-o", str(out)], capsys, "face-size")
    assert not out.exists()


def test_no_partial_outputs_when_a_file_exists_or_a_write_fails(tmp_path, capsys, monkeypatch):
    good = tmp_path / "good.png"
    Image.fromarray(axis_panorama()).save(good)
    (tmp_path / "good_view01.png").write_bytes(b"keep me")
    _fails(["convert", str(good), "--to", "cubemap", "views"], capsys, "already exists")
    assert files(tmp_path) == {"good.png", "good_view01.png"}
    assert (tmp_path / "good_view01.png").read_bytes() == b"keep me"

    calls = {"n": 0}
    real = export.encode_image

    def flaky(image, path, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return real(image, path, **kwargs)

    monkeypatch.setattr(export, "encode_image", flaky)
    with pytest.raises(OSError, match="disk full"):
        main(["convert", str(good), "--to", "cubemap", "-o", str(tmp_path / "faces")])
    assert not list((tmp_path / "faces").iterdir())  # the three faces written before the failure are gone


def test_overwrite(pano_png, tmp_path):
    args = ["convert", str(pano_png), "--to", "cubemap", "--face-size", "8", "--quiet"]
    assert main(args) == 0
    assert main(args) == 2
    assert main(args + ["--overwrite"]) == 0


def test_export_helpers():
    assert export.parse_view("45,-10") == export.ViewSpec(45.0, -10.0, 90.0, 0.0)
    assert export.parse_view("1,2,3,4") == export.ViewSpec(1.0, 2.0, 3.0, 4.0)
    assert export.parse_size("360x640") == (360, 640)
    with pytest.raises(export.InvalidInputError):
        export.parse_view("0,95")
    with pytest.raises(export.InvalidInputError):
        export.parse_size("640")
