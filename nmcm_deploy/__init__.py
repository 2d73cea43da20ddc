"""nmcm: train PyTorch models on microcontrollers, alone or as a cluster."""

__version__ = "0.1.0"
