"""camfleet trainer: the only camfleet part with torch and timm (training, ONNX export, bundle upload)."""

__version__ = "0.1.0"
