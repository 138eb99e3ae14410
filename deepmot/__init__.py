"""deepmot: train multi-object trackers by optimising MOTA/MOTP directly."""

__version__ = "0.1.0"
