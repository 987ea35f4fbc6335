"""attnedit: a reproducible benchmark harness for training-free, attention-based diffusion editing."""

__version__ = "0.1.0"
