"""pano360 caption: writes .txt / metadata.jsonl (and per-view captions) that training reads, never
replacing existing captions without --overwrite."""

import json

import pytest
from support.panoramas import write_panoramas

from pano360.captioning import caption_folder, horizon_views, tiny_captioner
from pano360.cli.main import main
from pano360.training.datasets import open_dataset


@pytest.fixture(scope="module")
def captioner(single_torch_thread):
    return tiny_captioner()


def test_txt_captions_and_views_are_read_by_training(tmp_path, captioner):
    write_panoramas(tmp_path, 2, captions="none")
    summary = caption_folder(tmp_path, captioner, views=True, prefix="a 360 view: ")
    assert sorted(summary.written) == ["pano0.png", "pano1.png"] and not summary.kept
    dataset = open_dataset(tmp_path)
    assert all(r.caption.startswith("a 360 view:") for r in dataset.records)
    assert all(r.view_captions is not None and len(r.view_captions) == 8 for r in dataset.records)


def test_existing_captions_are_kept_without_overwrite(tmp_path, captioner):
    write_panoramas(tmp_path, 2, captions="txt")
    (tmp_path / "pano1.txt").unlink()
    summary = caption_folder(tmp_path, captioner)
    assert summary.kept == ["pano0.png"] and summary.written == ["pano1.png"]
    assert (tmp_path / "pano0.txt").read_text() == "panorama number 0\n"
    caption_folder(tmp_path, captioner, overwrite=True, prefix="new ")
    assert (tmp_path / "pano0.txt").read_text().startswith("new ")


def test_jsonl_output_merges_with_existing_metadata(tmp_path, captioner):
    write_panoramas(tmp_path, 2, captions="none")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "pano0.png", "text": "mine"}) + "\n")
    caption_folder(tmp_path, captioner, output="jsonl", views=True)
    rows = {json.loads(line)["file_name"]: json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()}
    assert rows["pano0.png"] == {"file_name": "pano0.png", "text": "mine"}
    assert len(rows["pano1.png"]["view_texts"]) == 8
    assert open_dataset(tmp_path).records[0].caption == "mine"


def test_horizon_views_are_square_perspective_images():
    from PIL import Image
    from support.panoramas import panorama_array

    views = horizon_views(Image.fromarray(panorama_array(0, 32)), size=16)
    assert len(views) == 8 and all(v.size == (16, 16) for v in views)


def test_cli_runs_the_tiny_captioner_and_checks_the_folder_first(tmp_path, capsys, single_torch_thread):
    write_panoramas(tmp_path, 1, captions="none")
    assert main(["caption", str(tmp_path), "--model", "tiny", "--quiet"]) == 0
    assert (tmp_path / "pano0.txt").is_file()
    assert main(["caption", str(tmp_path / "missing"), "--model", "tiny"]) == 2
    assert "is not a folder" in capsys.readouterr().err
