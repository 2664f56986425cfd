"""Batch generation: a jobs file in, one image + sidecar per job out, resumable and sharded by rank.

``pano360 batch JOBS -o DIR`` (see :mod:`pano360.cli.batch`); in Python::

    from pano360.batch import BatchRunner, BatchSettings, load_jobs
    jobs, errors = load_jobs("jobs.jsonl", defaults={"model": "tiny", "num_inference_steps": 4})
    summary = BatchRunner(jobs, errors, BatchSettings(out_dir=Path("out"))).run()

On a Ray cluster: :class:`pano360.batch.ray_engine.RayBatchRunner` (``pip install "pano360[ray]"``; Ray is
imported only when it runs).
"""

from .jobs import Job, JobError, load_jobs, process_rank, shard
from .manifest import MANIFEST_NAME, merge_manifest, read_records
from .runner import BatchRunner, BatchSettings, BatchSummary, call_arguments, check_job, is_finished

__all__ = ["MANIFEST_NAME", "BatchRunner", "BatchSettings", "BatchSummary", "Job", "JobError", "call_arguments",
           "check_job", "is_finished", "load_jobs", "merge_manifest", "process_rank", "read_records", "shard"]
