"""Rewrite constraints.txt from the packages installed in the venv (after a requirements change).

    .venv/bin/python scripts/setup/freeze_constraints.py

`pip freeze` also lists the egg-info of Python modules inside the ros-* wheels (rclpy,
std_msgs, ...); those are not PyPI distributions and are left out. torch loses its local
label (+cpu) so the pin also matches the same release elsewhere.
"""
import subprocess
import sys
from pathlib import Path

HEADER = """\
# Every package of the dev environment, transitive ones included, pinned to what CI tests.
# Used as `pip install -c constraints.txt` by scripts/setup/setup.sh; regenerate with
# scripts/setup/freeze_constraints.py after changing a requirements file.
"""


def main() -> int:
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], check=True,
                            capture_output=True, text=True).stdout.splitlines()
    pins = dict(line.split("==", 1) for line in frozen if "==" in line)
    names = {n.lower() for n in pins}
    keep = []
    for name, version in pins.items():
        inner = "ros-" + name.lower().replace("_", "-")
        if not name.lower().startswith("ros-") and inner in names:
            continue  # a module inside a ros-* wheel, not a distribution
        if name.lower() in {"pip", "wheel"}:
            continue
        keep.append(f"{name}=={version.split('+')[0]}")
    out = Path(__file__).resolve().parents[2] / "constraints.txt"
    out.write_text(HEADER + "\n".join(sorted(keep, key=str.lower)) + "\n")
    print(f"wrote {len(keep)} pins to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
