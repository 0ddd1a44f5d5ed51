"""Torch-free inference for BitGen: onnxruntime + numpy only (see engine.py)."""
from bitgen_core.runtime.engine import BitGenRuntime, Selection, default_model_dir
from bitgen_core.runtime.memory import MemoryResult, RuntimeMemory

__all__ = ["BitGenRuntime", "Selection", "MemoryResult", "RuntimeMemory", "default_model_dir"]
