"""Training panorama adapters (``pano360 train``): data, augmentation, caches, the trainer, reports.

Layer: above the generator (validation generates through it); nothing below imports this package.

    from pano360.training import TrainingConfig, train
    train(TrainingConfig(data="panos/", output="out/", model="tiny", steps=100))
"""

from .config import TrainingConfig

_DATASETS = ("PanoramaDataset", "PanoramaRecord", "open_dataset")


def __getattr__(name: str):
    """The dataset names load torch: imported on first use, so ``train --help`` stays torch-free."""
    if name in _DATASETS:
        from . import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train(config, dataset=None, progress_callback=None):
    """Run ``config`` (see :func:`pano360.training.trainer.train`)."""
    from .trainer import train as run

    return run(config, dataset=dataset, progress_callback=progress_callback)


__all__ = ["PanoramaDataset", "PanoramaRecord", "TrainingConfig", "open_dataset", "train"]
