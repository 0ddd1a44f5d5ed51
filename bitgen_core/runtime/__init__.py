"""Torch-free inference for BitGen: onnxruntime + numpy only (see engine.py).

Names are imported lazily, so torch-side code can use the torch-free helpers of this package
(constrained.py) without loading onnxruntime."""
from __future__ import annotations

import importlib

_EXPORTS = {"BitGenRuntime": "engine", "Selection": "engine", "default_model_dir": "engine",
            "MemoryResult": "memory", "RuntimeMemory": "memory"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"bitgen_core.runtime.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'bitgen_core.runtime' has no attribute {name!r}")
