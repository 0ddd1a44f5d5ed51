"""The reliability layer loads in the node's process: it must import neither torch nor ROS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = ["bitgen_core.errors", "bitgen_core.store", "bitgen_core.audit", "bitgen_core.auth",
           "bitgen_core.limits", "bitgen_ros.image_convert"]


def test_reliability_modules_import_neither_torch_nor_ros():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in MODULES)
            + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
              "('torch', 'rclpy', 'sensor_msgs', 'cv2'))\n"
            + "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "", f"imported: {out}"
