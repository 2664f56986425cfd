"""Analyses built on the trainer, the generator and the metrics (``pano360 qkvo``)."""
