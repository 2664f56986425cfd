"""Time of the 3D path on this machine: 360° depth with Depth Anything V2 Small's architecture (random
weights: the time does not depend on them), the alignment + blend at 1024x2048, mesh, point cloud and
stereo, and the accuracy of the depth alignment on the synthetic room with a free-standing object.

    PYTHONPATH=src python benchmarks/bench_spatial.py [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from support.scenes import OBJECT_ROOM, StandInDepthModel
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    from pano360.spatial.depth import TransformersDepthModel, default_rig, estimate_depth
    from pano360.spatial.mesh import build_mesh, mesh_files, pointcloud_bytes
    from pano360.spatial.stereo import render_stereo

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                            image_size=518, patch_size=14, out_features=["stage3", "stage6", "stage9", "stage12"],
                            reshape_hidden_states=False, layerscale_value=1.0)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384, neck_hidden_sizes=[48, 96, 192, 384],
                                 fusion_hidden_size=64, head_hidden_size=32)
    network = DepthAnythingForDepthEstimation(config).eval()
    model = TransformersDepthModel(network, name="Depth-Anything-V2-Small architecture (random)", size=518,
                                   mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), prediction="disparity")
    print(f"depth model: {sum(p.numel() for p in network.parameters()) / 1e6:.1f} M parameters")
    pano, truth = OBJECT_ROOM.render(512, 1024)
    start = time.perf_counter()
    estimate_depth(pano, model, progress=False)
    print(f"estimate_depth 512x1024 (HxW), 6 views of 518x518: {time.perf_counter() - start:.1f} s")

    pano, truth = OBJECT_ROOM.render(1024, 2048)
    stand_in = StandInDepthModel(OBJECT_ROOM, default_rig(), prediction="disparity")
    start = time.perf_counter()
    result = estimate_depth(pano, stand_in, prediction="disparity", view_size=518, progress=False)
    seconds = time.perf_counter() - start
    error = (result.depth / (result.depth / truth).median() / truth - 1).abs()
    print(f"views + alignment + blend 1024x2048 (stand-in model): {seconds:.1f} s; relative error median "
          f"{float(error.median()):.4f}, p95 {float(error.quantile(0.95)):.4f}; overlap residual "
          f"{result.overlap_residual:.4f}")
    start = time.perf_counter()
    mesh = build_mesh(truth)
    data = next(iter(mesh_files(mesh, pano, "x.glb").values()))
    print(f"mesh 256 rows + .glb: {time.perf_counter() - start:.1f} s, {len(mesh.faces)} faces, {len(data) / 1e6:.1f} MB")
    start = time.perf_counter()
    data = pointcloud_bytes(truth, pano)
    print(f"point cloud .ply: {time.perf_counter() - start:.1f} s, {len(data) / 1e6:.1f} MB")
    start = time.perf_counter()
    _, info = render_stereo(pano, truth)
    print(f"stereo 360 TB 1024x2048 per eye: {time.perf_counter() - start:.1f} s, disoccluded "
          f"{info['disoccluded_fraction']}")


if __name__ == "__main__":
    main()
