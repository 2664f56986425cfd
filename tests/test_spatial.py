"""From panorama to 3D (issue 21): depth alignment on scenes with known geometry, meshes, point clouds,
stereo 360, HDR files, the convert/depth CLIs and their one-line errors.

Everything runs offline and small (64x128 panoramas): the depth "models" are a stand-in that returns
each view's true depth under a random scale and shift plus noise (tests/support/scenes.py) and a tiny
random transformers Depth Anything built here.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from support.scenes import BOX_ROOM, OBJECT_ROOM, StandInDepthModel

from pano360.cli.main import main
from pano360.errors import InvalidInputError, ModelLoadError
from pano360.geometry import perspective_to_equirect
from pano360.io.export import tensor_to_image
from pano360.spatial import convert_panorama
from pano360.spatial.depth import default_rig, estimate_depth, load_depth_model
from pano360.spatial.files import read_depth, write_depth
from pano360.spatial.hdr import decode_radiance, merge_exposures, srgb_to_linear
from pano360.spatial.mesh import build_mesh
from pano360.spatial.stereo import render_stereo

trimesh = pytest.importorskip("trimesh")


def _relative_error(estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """|estimate / g − truth| / truth with g the one global scale (median ratio)."""
    scale = (estimate / truth).median()
    return (estimate / scale - truth).abs() / truth


@pytest.mark.parametrize("scene", [BOX_ROOM, OBJECT_ROOM], ids=["box-room", "object-room"])
@pytest.mark.parametrize("prediction", ["depth", "disparity"])
def test_merged_depth_equals_truth_up_to_one_scale(scene, prediction):
    pano, truth = scene.render(64, 128)
    rig = default_rig()
    model = StandInDepthModel(scene, rig, prediction=prediction, noise=0.003, seed=1)
    result = estimate_depth(pano, model, prediction=prediction, view_size=48, batch_size=4, progress=False)
    assert result.depth.shape == (64, 128) and result.units == "relative"
    error = _relative_error(result.depth, truth)
    assert float(error.median()) <= 0.01
    assert float(error.quantile(0.95)) <= 0.02
    # the random per-view scales were undone: recovered scales ∝ 1 / true scales (horizon views; the up and
    # down views see mostly a flat ceiling/floor at constant planar depth, where only s·z + t is determined)
    recovered = (result.view_scale.double() * torch.tensor(model.scales))[:4]
    assert torch.allclose(recovered / recovered[0], torch.ones(4, dtype=torch.float64), rtol=0.02)
    # no step at the seam: the jump between the last and first column is the true jump
    seam = (result.depth[:, 0] / result.depth[:, -1]) / (truth[:, 0] / truth[:, -1])
    assert float((seam - 1).abs().max()) < 0.01
    # no step at view borders: where a view's coverage starts or ends, the error does not jump
    signed = result.depth / (result.depth / truth).median() / truth - 1
    jumps = (signed[:, 1:] - signed[:, :-1]).abs()
    coverage = torch.stack([perspective_to_equirect(torch.ones(1, 1, 1, 48, 48), **rig[v].angles(), out_hw=(64, 128))[1][0, 0]
                            for v in range(len(rig))])
    edge = (truth[:, 1:] / truth[:, :-1] - 1).abs() > 0.05  # the object's silhouette: a true depth edge,
    edge = torch.nn.functional.max_pool2d(edge[None].float(), 5, 1, 2)[0] > 0  # and the pixels it blurs
    border = (coverage[:, :, 1:] != coverage[:, :, :-1]).any(0) & ~edge
    assert float(jumps[border].max()) < 0.02
    assert float(jumps[border].mean()) < 2 * float(jumps[~border & ~edge].mean()) + 1e-3
    assert result.overlap_residual < 0.01


def save_tiny_depth_anything(folder):
    """A random Depth Anything (DINOv2 backbone) with 28x28 inputs, saved like a hub checkpoint."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            image_size=28, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 8, 8],
                                 fusion_hidden_size=8, head_hidden_size=4)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "DPTImageProcessor", "size": {"height": 28, "width": 28},
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    return folder


def test_tiny_transformers_depth_model_runs_and_wrong_models_are_refused(tmp_path):
    from transformers import BertConfig, BertModel

    save_tiny_depth_anything(tmp_path / "tiny-da")
    model = load_depth_model(tmp_path / "tiny-da", local_files_only=True)
    assert (model.size, model.multiple, model.prediction) == (28, 14, "disparity")
    pano, _ = BOX_ROOM.render(32, 64)
    result = estimate_depth(pano, model, progress=False)
    assert result.depth.shape == (32, 64) and bool(torch.isfinite(result.depth).all())
    assert float(result.depth.min()) > 0 and result.view_size == 28

    # the same model by folder name through the CLI, written as 16-bit PNG with its sidecar
    path = tmp_path / "room.png"
    tensor_to_image(pano[0]).save(path)
    out = tmp_path / "room_depth.png"
    assert main(["depth", str(path), "-o", str(out), "--depth-model", str(tmp_path / "tiny-da"), "--quiet"]) == 0
    record = json.loads((tmp_path / "room_depth.png.json").read_text())["depth"]
    assert record["units"] == "relative" and record["prediction"] == "disparity"
    assert read_depth(out).shape == (32, 64)

    from pano360.cli import depth as depth_cli
    from pano360.spatial.depth import DEFAULT_DEPTH_MODEL

    assert depth_cli.DEFAULT_DEPTH_MODEL == DEFAULT_DEPTH_MODEL  # the CLI keeps a torch-free copy for --help
    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                         vocab_size=10)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="not a depth-estimation model"):
        load_depth_model(tmp_path / "bert", local_files_only=True)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_depth_model(tmp_path / "missing")


def test_depth_files_round_trip(tmp_path):
    depth = torch.rand(16, 32) * 4 + 0.5
    assert torch.equal(read_depth(write_depth(depth, tmp_path / "d.exr")), depth)
    png = read_depth(write_depth(depth, tmp_path / "d.png"))
    assert float((png - depth).abs().max()) <= depth.max() / 65535
    with pytest.raises(InvalidInputError, match=r"\.png \(16-bit\) or \.exr"):
        write_depth(depth, tmp_path / "d.jpg")


def test_mesh_of_the_box_room_lies_on_its_planes_and_opens(tmp_path):
    pano, truth = BOX_ROOM.render(64, 128)
    mesh = build_mesh(truth, rows=64)
    points = mesh.vertices.astype(np.float64) * np.array([1.0, 1.0, -1.0])  # file frame → pano360 frame
    distance = np.min(np.stack([np.abs(points[:, axis] - value) for axis, value in BOX_ROOM.planes()]), 0)
    room_size = max(np.subtract(BOX_ROOM.room_max, BOX_ROOM.room_min))
    assert distance.max() <= 0.01 * room_size and mesh.dropped == 0
    triangles = mesh.vertices[mesh.faces]  # every face turns its front to the viewer at the centre
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    assert ((normals * triangles.mean(1)).sum(1) < 0).all()

    path = convert_panorama(_save(pano, tmp_path / "box.png"), "mesh", tmp_path / "box.glb", depth=truth)
    scene = trimesh.load(path)
    loaded = next(iter(scene.geometry.values()))
    assert len(loaded.faces) == len(mesh.faces) and loaded.visual.material.baseColorTexture.size == (128, 64)
    obj = convert_panorama(tmp_path / "box.png", "mesh", tmp_path / "box.obj", depth=truth)
    assert {p.name for p in tmp_path.iterdir()} >= {"box.obj", "box.mtl", "box_texture.png"}
    assert "box_texture.png" in (tmp_path / "box.mtl").read_text() and obj.stat().st_size > 0


def test_mesh_removes_faces_across_depth_edges(tmp_path):
    pano, truth = OBJECT_ROOM.render(64, 128)
    mesh = build_mesh(truth, rows=64, grazing_deg=85)
    assert mesh.dropped > 0
    depth = mesh.depth[mesh.faces]
    assert (depth.max(1) / depth.min(1) - 1 <= mesh.threshold + 1e-6).all()
    cloud = trimesh.load(convert_panorama(_save(pano, tmp_path / "o.png"), "pointcloud", tmp_path / "o.ply",
                                          depth=truth))
    assert len(cloud.vertices) == 64 * 128 and cloud.colors.shape == (64 * 128, 4)


def test_stereo_disparity_matches_ipd_geometry():
    height, width, distance, ipd = 64, 256, 0.5, 0.064
    pano = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    image, info = render_stereo(pano, torch.full((height, width), distance), ipd=ipd)
    assert image.shape == (1, 3, 2 * height, width) and info["left_eye"] == "top"
    expected = math.asin(ipd / 2 / distance) * width / (2 * math.pi)  # pixels per eye
    rows = slice(height // 2 - 4, height // 2 + 4)

    def shift(eye):  # the horizontal roll that best maps the panorama onto the eye image (0.05 px steps)
        errors = {}
        for s in np.arange(-8, 8.001, 0.05):
            x = torch.arange(width) - float(s)
            x0 = x.floor().long()
            frac = x - x0
            moved = pano[0, :, rows][..., x0 % width] * (1 - frac) + pano[0, :, rows][..., (x0 + 1) % width] * frac
            errors[float(s)] = float((eye[:, rows] - moved).abs().mean())
        return min(errors, key=errors.get)

    left, right = shift(image[0, :, :height]), shift(image[0, :, height:])
    assert left == pytest.approx(expected, abs=0.3) and right == pytest.approx(-expected, abs=0.3)
    assert left - right == pytest.approx(2 * expected, abs=0.3)


def test_stereo_fills_disocclusions_with_background(tmp_path):
    pano, truth = OBJECT_ROOM.render(64, 128)
    image, info = render_stereo(pano, truth)  # at 64 mm the object's disocclusions are < 1 px: closed by splatting
    assert info["disoccluded_fraction"]["left"] < 0.01 and bool((image > 0).any(1).all())
    image, info = render_stereo(pano, truth, ipd=0.4)  # a wide baseline opens real holes, filled from the wall
    assert 0 < info["disoccluded_fraction"]["left"] < 0.1 and bool((image > 0).any(1).all())
    path = convert_panorama(_save(pano, tmp_path / "o.png"), "stereo", depth=truth)
    assert path.name == "o_360_TB.png"
    from pano360.io.xmp import extract_xmp

    assert 'GSpherical:StereoMode="top-bottom"' in extract_xmp(path.read_bytes())


def test_hdr_files_and_exposure_merge(tmp_path):
    pano, _ = BOX_ROOM.render(16, 32)
    path = convert_panorama(_save(pano, tmp_path / "p.png"), "hdr", tmp_path / "p.hdr", exposure_ev=1.0)
    decoded = decode_radiance(path.read_bytes())
    stored = srgb_to_linear(torch.from_numpy(np.array(tensor_to_image(pano[0]))).float() / 255) * 2
    peak = stored.amax(-1, keepdim=True).numpy()  # RGBE: 8-bit mantissas shared with the brightest channel
    assert decoded.shape == (16, 32, 3) and (np.abs(decoded - stored.numpy()) <= peak / 128).all()
    from pano360.spatial.files import decode_exr

    exr = decode_exr(convert_panorama(tmp_path / "p.png", "exr", tmp_path / "p.exr"))
    assert set(exr) == {"R", "G", "B"} and np.allclose(exr["R"], stored[..., 0].numpy() / 2, atol=1e-6)
    # three exposures of a scene brighter than white: the merge recovers the radiance beyond 1
    radiance = torch.rand(1, 3, 8, 16) * 6

    def shot(ev):
        linear = (radiance * 2.0 ** ev).clamp(0, 1)
        return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)

    merged = merge_exposures([shot(0), shot(-2), shot(-4)], [0, -2, -4])
    assert torch.allclose(merged, radiance, rtol=1e-3, atol=1e-4)


def test_bad_inputs_get_one_line_before_work(tmp_path, capsys):
    square = _save(torch.rand(1, 3, 32, 32), tmp_path / "square.png")
    with pytest.raises(InvalidInputError, match=r"32x32 \(HxW\).*2:1"):
        convert_panorama(square, "mesh", tmp_path / "m.glb")
    pano = _save(torch.rand(1, 3, 32, 64), tmp_path / "p.png")
    write_depth(torch.rand(16, 32) + 1, tmp_path / "small.exr")
    with pytest.raises(InvalidInputError, match=r"16x32 \(HxW\) but the panorama is 32x64"):
        convert_panorama(pano, "mesh", tmp_path / "m.glb", depth=tmp_path / "small.exr")
    with pytest.raises(InvalidInputError, match="unknown --to 'voxels'"):
        convert_panorama(pano, "voxels", tmp_path / "m.vox")
    with pytest.raises(InvalidInputError, match="writes .glb or .obj"):
        convert_panorama(pano, "mesh", tmp_path / "m.stl")
    with pytest.raises(InvalidInputError, match="'ipd' does not apply to --to mesh"):
        convert_panorama(pano, "mesh", tmp_path / "m.glb", ipd=0.06)
    for argv, message in [
        (["convert", str(pano), "--to", "mesh", "--depth", str(tmp_path / "small.exr")], "16x32 (HxW)"),
        (["convert", str(square), "--to", "stereo"], "32x32 (HxW)"),
        (["convert", str(pano), "--to", "voxels"], "unknown --to target 'voxels'"),
        (["convert", str(pano), "--to", "mesh", "--ipd", "0.07"], "--ipd only apply with --to stereo"),
        (["depth", str(pano), "-o", str(tmp_path / "d.tif")], "d.tif"),
        (["depth", str(square)], "32x32 (HxW)"),
        (["depth", str(pano), "--depth-model", str(tmp_path / "nope")], "does not exist"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "small.exr", "small.exr.json", "square.png"]


def test_convert_cli_writes_every_3d_output_from_one_depth(tmp_path, capsys):
    pano, truth = OBJECT_ROOM.render(32, 64)
    source = _save(pano, tmp_path / "room.png")
    write_depth(truth, tmp_path / "room_depth.exr", record={"units": "metres"})
    assert main(["convert", str(source), "--to", "mesh", "pointcloud", "stereo", "hdr", "exr", "--quiet"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"room_mesh.glb", "room_points.ply", "room_360_TB.png", "room.hdr", "room.exr"} <= names
    # no clobbering, and a failing run leaves nothing new behind
    assert main(["convert", str(source), "--to", "mesh"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_batch_jobs_write_their_exports(tmp_path, tiny_generators, single_torch_thread):
    from pano360.batch import exports as batch_exports
    from pano360.batch.jobs import load_jobs
    from pano360.batch.manifest import read_records
    from pano360.batch.runner import BatchRunner, BatchSettings
    from pano360.spatial import CONVERSIONS

    assert batch_exports.EXPORTS == CONVERSIONS
    model = save_tiny_depth_anything(tmp_path / "tiny-da")
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text(json.dumps({"prompt": "a room", "exports": "depth,mesh,stereo,hdr",
                                     "depth_model": str(model)}) + "\n"
                         + json.dumps({"prompt": "b", "exports": ["voxels"]}) + "\n")
    jobs, errors = load_jobs(jobs_file, defaults={"model": "tiny", "height": 32, "width": 64,
                                                  "num_inference_steps": 2})
    assert len(jobs) == 1 and "unknown export 'voxels'" in errors[0].reason
    assert jobs[0].spec["exports"] == ["depth", "hdr", "mesh", "stereo"]
    out = tmp_path / "out"
    summary = BatchRunner(jobs, errors, BatchSettings(out_dir=out, progress=False),
                          lambda _: tiny_generators("tiny")).run()
    assert summary.total["done"] == 1
    record = next(r for r in read_records(out / "manifest.jsonl") if r["status"] == "done")
    stem = record["file"][:-4]
    assert sorted(record["exports"]) == sorted([f"{stem}_depth.exr", f"{stem}_depth.exr.json", f"{stem}_mesh.glb",
                                                f"{stem}_360_TB.png", f"{stem}.hdr"])
    assert all((out / name).is_file() for name in record["exports"])


def _save(pano: torch.Tensor, path):
    tensor_to_image(pano[0]).save(path)
    return path


def test_stereo_holes_can_be_filled_by_the_inpainting_path():
    from pano360.backbones.tiny import tiny_pipeline
    from pano360.sphere.stereo_fill import inpaint_fill

    pano, truth = OBJECT_ROOM.render(32, 64)
    plain, _ = render_stereo(pano, truth, ipd=0.4)
    calls = []
    fill = inpaint_fill(tiny_pipeline("sd1"), "a room", num_inference_steps=2)
    image, _info = render_stereo(pano, truth, ipd=0.4, fill=lambda img, holes: calls.append(holes) or fill(img, holes))
    holes = torch.cat([calls[0], calls[1]], dim=-2)  # left eye on top
    assert len(calls) == 2 and bool(holes.any())
    assert torch.equal(image[~holes.expand_as(image)], plain[~holes.expand_as(plain)])  # only holes change
    assert not torch.equal(image, plain)
