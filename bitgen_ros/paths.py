"""Where the package's shipped files (config/, launch/, models/) are, in a checkout or installed.

In a source checkout they sit beside the `bitgen_ros/` folder; after `colcon build` they are
in `share/bitgen_ros/` (found through the ament index, as `ros2 launch` finds them).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "bitgen_ros"


def share_dir() -> Path:
    """The checkout root when run from source, else the installed share/bitgen_ros."""
    here = Path(__file__).resolve().parent.parent
    if (here / "package.xml").exists() and (here / "config").is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except Exception:          # not installed through ament either: fall back to the checkout
        return here


def config_file(name: str) -> Path:
    return share_dir() / "config" / name
