"""Test-wide settings: never touch the network, keep caches in a temporary folder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def tiny_generators():
    """Lazily built tiny generators by name (shared: tests must not change their state)."""
    from pano360 import PanoramaGenerator

    cache = {}

    def get(model: str = "tiny", controlnet: str | None = None):
        key = (model, controlnet)
        if key not in cache:
            cache[key] = PanoramaGenerator.from_pretrained(model, device="cpu", torch_dtype="fp32",
                                                           controlnet=controlnet)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_sd1_folder(tmp_path_factory):
    """A tiny SD 1.x pipeline (with a depth ControlNet) saved in diffusers layout."""
    from pano360.backbones.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd1"), "sd1", controlnet=True)


@pytest.fixture(scope="module")
def single_torch_thread():
    """One intra-op thread for a module of tiny-model tests: they gain nothing from threads, and on a
    busy 2-core machine OpenMP barriers made them many times slower. Restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
