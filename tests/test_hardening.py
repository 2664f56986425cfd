"""Issue 10 acceptance: invalid invocations of every sub-command and of the Python API.

Each one must give a non-zero exit (or a ``Pano360Error``), no traceback, one line naming the fix, and
(for ``generate``) fail within 5 s with nothing written and no model loaded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image

from pano360.cli.main import main
from pano360.errors import Pano360Error


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Input files of every kind: good panoramas, broken ones, folders, a file where a folder goes."""
    root = tmp_path_factory.mktemp("world")
    good = root / "good.png"
    Image.effect_noise((64, 32), 40).convert("RGB").save(good)
    Image.open(good).save(root / "good.jpg", quality=90)
    data = good.read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "truncated.jpg").write_bytes((root / "good.jpg").read_bytes()[:-200])
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (root / "corrupt.png").write_bytes(bytes(corrupt))
    (root / "text.png").write_text("this is text, not a PNG")
    (root / "empty.png").write_bytes(b"")
    Image.new("RGB", (64, 64)).save(root / "square.png")
    (root / "blocker").write_text("a file where a folder is expected")
    (root / "existing.html").write_text("keep")
    readonly = root / "readonly.png"
    readonly.write_bytes(data)
    os.chmod(readonly, 0o444)
    for name in ("gen", "broken_gen"):
        (root / name).mkdir()
        Image.open(good).save(root / name / "a.png")
    (root / "broken_gen" / "b.png").write_bytes(data[:100])
    (root / "evaluated" / "eval").mkdir(parents=True)
    Image.open(good).save(root / "evaluated" / "a.png")
    (root / "evaluated" / "eval" / "metrics.json").write_text("{}")
    yield root
    os.chmod(readonly, 0o644)


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, (captured.err + captured.out).strip()


# (id, argv with {d} = the world folder, text the one error line must contain)
CONVERT = [
    ("truncated-png", ["convert", "{d}/truncated.png", "--to", "cubemap", "-o", "{d}/out"], "truncated or corrupt"),
    ("truncated-jpg", ["convert", "{d}/truncated.jpg", "--to", "views", "-o", "{d}/out"], "truncated or corrupt"),
    ("corrupt-png", ["convert", "{d}/corrupt.png", "--to", "cross", "-o", "{d}/out"], "truncated or corrupt"),
    ("text-as-png", ["convert", "{d}/text.png", "--to", "cubemap", "-o", "{d}/out"], "not an image"),
    ("empty-file", ["convert", "{d}/empty.png", "--to", "cubemap", "-o", "{d}/out"], "not an image"),
    ("missing", ["convert", "{d}/missing.png", "--to", "cubemap", "-o", "{d}/out"], "does not exist"),
    ("folder-input", ["convert", "{d}/gen", "--to", "cubemap", "-o", "{d}/out"], "is a folder"),
    ("square", ["convert", "{d}/square.png", "--to", "cubemap", "-o", "{d}/out"], "taller than 2:1"),
    ("unknown-target", ["convert", "{d}/good.png", "--to", "hdr"], "unknown --to target"),
    ("nothing-to-do", ["convert", "{d}/good.png"], "nothing to do"),
    ("fov-180", ["convert", "{d}/good.png", "--to", "views", "--view", "0,0,180", "-o", "{d}/out"], "between 0 and 180"),
    ("view-text", ["convert", "{d}/good.png", "--to", "views", "--view", "a,b", "-o", "{d}/out"], "YAW,PITCH"),
    ("view-nan", ["convert", "{d}/good.png", "--to", "views", "--view", "nan,0", "-o", "{d}/out"], "YAW,PITCH"),
    ("view-pitch", ["convert", "{d}/good.png", "--to", "views", "--view", "0,95", "-o", "{d}/out"], "-90 and 90"),
    ("view-size-0", ["convert", "{d}/good.png", "--to", "views", "--view-size", "0x10", "-o", "{d}/out"], "out of range"),
    ("view-size-text", ["convert", "{d}/good.png", "--to", "views", "--view-size", "big", "-o", "{d}/out"],
     "HEIGHTxWIDTH"),
    ("face-size-0", ["convert", "{d}/good.png", "--to", "cubemap", "--face-size", "0", "-o", "{d}/out"], "--face-size"),
    ("face-size-huge", ["convert", "{d}/good.png", "--to", "cubemap", "--face-size", "100000", "-o", "{d}/out"],
     "1..16384"),
    ("convention", ["convert", "{d}/good.png", "--to", "cubemap", "--convention", "directx"], "unknown cubemap convention"),
    ("format", ["convert", "{d}/good.png", "--to", "cubemap", "--format", "webp"], "--format"),
    ("mode", ["convert", "{d}/good.png", "--to", "cubemap", "--mode", "cubic"], "interpolation mode"),
    ("video-flag-without-video", ["convert", "{d}/good.png", "--to", "cubemap", "--frames", "10"],
     "only apply with --to video"),
    ("view-flag-without-views", ["convert", "{d}/good.png", "--to", "cubemap", "--view", "0,0"],
     "only apply with --to views"),
    ("fps-nan", ["convert", "{d}/good.png", "--to", "video", "--fps", "nan", "-o", "{d}/out"], "finite"),
    ("video-fov", ["convert", "{d}/good.png", "--to", "video", "--video-fov", "0", "-o", "{d}/out"], "between 0 and 180"),
    ("video-pitch", ["convert", "{d}/good.png", "--to", "video", "--video-pitch", "100", "-o", "{d}/out"], "-90 and 90"),
    ("out-dir-under-file", ["convert", "{d}/good.png", "--to", "cubemap", "-o", "{d}/blocker/out"],
     "is a file, not a folder"),
    ("prefix-with-folder", ["convert", "{d}/good.png", "--to", "cubemap", "--prefix", "a/b"], "--out-dir"),
    ("read-only-tag", ["convert", "{d}/readonly.png", "--add-metadata"], "--metadata-out"),
    ("tag-copy-extension", ["convert", "{d}/good.png", "--add-metadata", "--metadata-out", "{d}/copy.jpg"], "extension"),
    ("metadata-out-alone", ["convert", "{d}/good.png", "--metadata-out", "{d}/copy.png"], "--add-metadata"),
    ("tag-copy-under-file", ["convert", "{d}/good.png", "--add-metadata", "--metadata-out", "{d}/blocker/c.png"],
     "is a file, not a folder"),
    ("unknown-flag", ["convert", "{d}/good.png", "--to", "cubemap", "--bogus"], "--help"),
    ("no-input", ["convert"], "--help"),
]

VIEW = [
    ("truncated", ["view", "{d}/truncated.png", "--html", "{d}/v.html"], "truncated or corrupt"),
    ("corrupt", ["view", "{d}/corrupt.png", "--html", "{d}/v.html"], "truncated or corrupt"),
    ("text", ["view", "{d}/text.png", "--html", "{d}/v.html"], "not an image"),
    ("missing-served", ["view", "{d}/missing.png", "--no-browser"], "does not exist"),
    ("folder", ["view", "{d}/gen", "--html", "{d}/v.html"], "is a folder"),
    ("square", ["view", "{d}/square.png", "--html", "{d}/v.html"], "taller than 2:1"),
    ("html-suffix", ["view", "{d}/good.png", "--html", "{d}/v.txt"], ".html file name"),
    ("html-under-file", ["view", "{d}/good.png", "--html", "{d}/blocker/v.html"], "is a file, not a folder"),
    ("html-exists", ["view", "{d}/good.png", "--html", "{d}/existing.html"], "--overwrite"),
    ("pitch", ["view", "{d}/good.png", "--pitch", "100"], "-90 and 90"),
    ("hfov", ["view", "{d}/good.png", "--hfov", "0"], "between 0 and 180"),
    ("yaw-nan", ["view", "{d}/good.png", "--yaw", "nan"], "finite"),
    ("port", ["view", "{d}/good.png", "--port", "70000"], "0..65535"),
    ("port-with-html", ["view", "{d}/good.png", "--html", "{d}/v.html", "--port", "8080"], "apply when serving"),
    ("overwrite-when-serving", ["view", "{d}/good.png", "--overwrite"], "applies to --html"),
    ("port-text", ["view", "{d}/good.png", "--port", "http"], "invalid int"),
]

INFO = [
    ("truncated-png", ["info", "{d}/truncated.png"], "truncated or corrupt"),
    ("truncated-jpg", ["info", "{d}/truncated.jpg"], "truncated or corrupt"),
    ("corrupt", ["info", "{d}/corrupt.png"], "truncated or corrupt"),
    ("folder", ["info", "{d}/gen"], "is a folder"),
    ("missing", ["info", "{d}/missing.png"], "does not exist"),
    ("text", ["info", "{d}/text.png"], "not an image"),
    ("empty", ["info", "{d}/empty.png"], "not an image"),
    ("two-images", ["info", "{d}/good.png", "{d}/good.jpg"], "unrecognized arguments"),
]

EVAL = [
    ("missing-folder", ["eval", "{d}/missing"], "does not exist"),
    ("file-not-folder", ["eval", "{d}/good.png"], "is a file"),
    ("missing-reference", ["eval", "{d}/gen", "--reference", "{d}/nope", "-o", "{d}/ev"], "does not exist"),
    ("reference-is-generated", ["eval", "{d}/gen", "--reference", "{d}/gen", "-o", "{d}/ev"], "GENERATED folder itself"),
    ("missing-prompts", ["eval", "{d}/gen", "--prompts", "{d}/prompts.txt", "-o", "{d}/ev"], "does not exist"),
    ("output-under-file", ["eval", "{d}/gen", "-o", "{d}/blocker/ev"], "is a file, not a folder"),
    ("output-exists", ["eval", "{d}/evaluated"], "--overwrite"),
    ("size-text", ["eval", "{d}/gen", "--size", "big", "-o", "{d}/ev"], "HEIGHTxWIDTH"),
    ("num-views-0", ["eval", "{d}/gen", "--num-views", "0", "-o", "{d}/ev"], "--num-views must be at least 1"),
    ("batch-size-0", ["eval", "{d}/gen", "--batch-size", "0", "-o", "{d}/ev"], "--batch-size must be at least 1"),
    ("truncated-image", ["eval", "{d}/broken_gen", "--metrics", "ds", "-o", "{d}/ev", "--quiet"], "truncated or corrupt"),
    ("fid-resize-choice", ["eval", "{d}/gen", "--fid-resize", "lanczos"], "invalid choice"),
    ("seed-text", ["eval", "{d}/gen", "--seed", "abc"], "invalid int"),
]

TOP = [
    ("unknown-command", ["render", "x"], "invalid choice"),
]

NON_GENERATE = [(f"{case[1][0] if case[1] else 'pano360'}-{case[0]}", case[1], case[2])
                for case in CONVERT + VIEW + INFO + EVAL + TOP]


def _check_one_line(code: int, text: str, fix: str) -> None:
    assert code not in (0, None), text
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert fix in lines[0], text
    assert ": error: " in lines[0], text


@pytest.mark.parametrize("name, argv, fix", NON_GENERATE, ids=[case[0] for case in NON_GENERATE])
def test_invalid_invocation_of_other_commands(world, capsys, name, argv, fix):
    before = _snapshot(world)
    code, text = _run_cli([part.replace("{d}", str(world)) for part in argv], capsys)
    _check_one_line(code, text, fix)
    assert _snapshot(world) == before, "an invalid invocation wrote or changed files"
