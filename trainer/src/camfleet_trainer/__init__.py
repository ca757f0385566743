"""camfleet trainer: the only camfleet part with torch and timm (training, ONNX export, bundle upload)."""

# Before anything imports timm (and with it torchvision): see _compat for why.
from camfleet_trainer import _compat  # noqa: F401

__version__ = "0.1.0"
