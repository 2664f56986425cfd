"""Two CPU processes over gloo (``accelerate launch --multi_gpu --num_processes 2 ... --cpu``) with batch 1
each train the same adapter as one process with batch 2 on the same data order."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file
from support.panoramas import write_panoramas

ARGS = ["--model", "tiny", "--steps", "3", "--resolution", "32", "--checkpoint-every", "0", "--quiet", "--lr", "1e-3"]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not installed")
def test_two_processes_with_batch_one_equal_one_process_with_batch_two(tmp_path, single_torch_thread):
    data = tmp_path / "data"
    write_panoramas(data, 3, height=32)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    launch = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517", "-m", "pano360"]
    two = subprocess.run([*launch, "train", str(data), "-o", str(tmp_path / "two"), "--batch-size", "1", "--cpu", *ARGS],
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    from pano360.cli.main import main

    assert main(["train", str(data), "-o", str(tmp_path / "one"), "--batch-size", "2", *ARGS]) == 0
    assert json.loads((tmp_path / "two" / "training_config.json").read_text())["processes"] == 2
    a = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    assert max(b[k].abs().max().item() for k in b if "up" in k) > 1e-4  # the adapter did move
