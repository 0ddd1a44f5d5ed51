"""One tiny model, exported once per test session, for the runtime and CLI tests.

A nano BitGen (d=64, 2 layers) with the small ternary student vision encoder, randomly
initialised (seeded), saved as a checkpoint and exported with training/export.py into a temp
directory. Real torch export, real onnxruntime: nothing is mocked. About 10 s on a loaded
2-core machine.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class ExportedModel:
    directory: Path
    checkpoint: Path


def _export(root: Path) -> ExportedModel:
    import torch

    from bitgen_core.config import BitGenConfig
    from bitgen_core.model import BitGenModel
    from training.export import export_model

    torch.set_num_threads(1)
    torch.manual_seed(1234)
    model = BitGenModel(BitGenConfig.preset("nano", vision_kind="ternary_student", memory_lexical=True,
                                            memory_address_dims=32, memory_scope=True, memory_robot=True),
                        pretrained=False).eval()
    with torch.no_grad():   # a visible gate, so the image actually changes the answer
        for block in model.blocks:
            if block.xattn is not None:
                block.xattn.gate.fill_(0.8)
        # a visible scope: "zone" and "b" name a place (specificity ~5), other words ~0.05
        model.memory_scope.offset[model.tokenizer.encode("zone b", 8)] = 8.0
        model.selector.fact_gate.fill_(1.0)   # the selector's fact term (memory_robot) at work
    ckpt = root / "nano.pt"
    model.save(ckpt)
    export_model(model, root / "model", model_id="test-nano")
    return ExportedModel(root / "model", ckpt)


@pytest.fixture(scope="session", autouse=True)
def graph_cache(tmp_path_factory):
    """The runtime's per-machine cache of optimised graphs (runtime/sessions.py) goes to a
    session temp dir, not the user's ~/.cache; child processes (the CLI) inherit it."""
    import os
    root = tmp_path_factory.mktemp("bitgen_cache")
    old = os.environ.get("BITGEN_CACHE")
    os.environ["BITGEN_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("BITGEN_CACHE", None)
    else:
        os.environ["BITGEN_CACHE"] = old


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> ExportedModel:
    return _export(tmp_path_factory.mktemp("bitgen_export"))


@pytest.fixture(scope="session")
def tokenizer():
    """The shipped tokenizer (the trace grammar and draft tests build on it)."""
    from bitgen_core.tokenizer import BitGenTokenizer
    return BitGenTokenizer.load()


@pytest.fixture()
def model_copy(exported, tmp_path) -> Path:
    """A private copy of the exported directory that a test may damage."""
    dst = tmp_path / "model"
    shutil.copytree(exported.directory, dst)
    return dst
