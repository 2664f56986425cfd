"""benchmarks/gpu_suite.py runs end to end in its CPU dry-run mode and writes its table into the docs."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_gpu_suite_dry_run_writes_its_block(tmp_path, single_torch_thread):
    suite = _suite()
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nkept text\n")
    rows = suite.main(["--dry-run", "--steps", "2", "--only", "sd2", "--methods", "circular",
                       "--docs", str(docs)])
    assert [r["case"].split()[0] for r in rows] == ["circular"]
    assert all("error" not in r and r["seconds"] > 0 and r["tflop"] >= 0 for r in rows)
    text = docs.read_text()
    assert "kept text" in text and text.count(suite.BEGIN) == 1 and "circular 64×128" in text
    suite.write_docs(docs, suite.BEGIN + "\nreplaced\n" + suite.END)  # a second run replaces the block
    assert docs.read_text().count(suite.BEGIN) == 1 and "replaced" in docs.read_text()


def test_standard_cases_cover_every_method_and_both_models():
    suite = _suite()
    cases = suite.standard_cases()
    assert {c.family for c in cases} == {"sd2", "sdxl"}
    assert {c.method for c in cases} >= {"circular", "multidiffusion", "syncdiffusion"}
    assert any(c.channels_last for c in cases)
