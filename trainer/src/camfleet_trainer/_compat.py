"""Make torchvision importable next to a CPU-only torch (imported before timm)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

# Why: PyPI's torchvision 0.28 wheel is a CUDA build. With CPU torch its C ops (`_C.so`) fail to load, and
# torchvision then crashes at import time registering fake kernels for `torchvision::nms` / `qnms`, ops that
# were never defined. Defining the two schemas (no kernels) lets the import finish; timm never calls them.
_LIBRARY: torch.library.Library | None = None


def _torchvision_ops_load() -> bool:
    """Tell whether torchvision's compiled ops load, without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: nothing to patch
    for folder in spec.submodule_search_locations:
        for lib in Path(folder).glob("_C*.so"):
            try:
                torch.ops.load_library(str(lib))
            except OSError:
                return False
            return True
    return False


def ensure_torchvision_importable() -> None:
    """Define torchvision's nms/qnms schemas when its C ops cannot load; idempotent."""
    global _LIBRARY
    if _LIBRARY is not None or _torchvision_ops_load():
        return
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
    _LIBRARY = lib


ensure_torchvision_importable()
