"""Make the ROS 2 Kilted PyPI wheels usable as a colcon underlay (idempotent).

The `ros-*` wheels were built in a manylinux container and their exported CMake targets
(`share/*/cmake/*__rosidl_generator_pyExport.cmake`) name that container's include
directories (/opt/python/cp311-cp311/include/python3.11 and a numpy include under the same
root). CMake refuses targets whose include directories do not exist, so
`rosidl_generate_interfaces` fails in any package that depends on them. This rewrites those
paths to this interpreter's real Python and numpy include directories.

The other fixes of docs "ROS from PyPI" live elsewhere: the missing build wheels are in
requirements-ros.txt, AMENT_PREFIX_PATH is set by scripts/setup/env.sh, and package.xml has a
maintainer address that catkin_pkg accepts.

Usage: python scripts/setup/fix_ros_wheels.py [--check]
  --check  change nothing; exit 1 if a file still needs the fix.
"""
import argparse
import re
import sys
import sysconfig
from pathlib import Path

# Include dirs of the wheel build container, for any CPython 3 minor version.
_BUILD_NUMPY_INCLUDE = re.compile(
    r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include")
_BUILD_PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")


def real_include_dirs() -> tuple[str, str]:
    """This interpreter's Python.h directory and numpy's C include directory."""
    python_include = sysconfig.get_paths()["include"]
    if not Path(python_include, "Python.h").is_file():
        sys.exit(f"error: Python headers not found in {python_include}; install the "
                 "python3.11 development headers (Debian: apt-get install python3.11-dev).")
    try:
        import numpy
    except ImportError:
        sys.exit("error: numpy is not installed in this environment; run `make setup` first.")
    return python_include, numpy.get_include()


def exported_target_files(prefix: Path) -> list[Path]:
    return sorted(prefix.glob("share/*/cmake/*__rosidl_generator_pyExport.cmake"))


def fix_file(path: Path, python_include: str, numpy_include: str, check: bool) -> bool:
    """Rewrite one export file; returns True when it needed (or got) the fix."""
    text = path.read_text()
    fixed = _BUILD_NUMPY_INCLUDE.sub(numpy_include, text)
    fixed = _BUILD_PYTHON_INCLUDE.sub(python_include, fixed)
    if fixed == text:
        return False
    if not check:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(fixed)
        tmp.replace(path)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report only, change nothing")
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="install prefix of the wheels (default: this venv)")
    args = parser.parse_args()

    files = exported_target_files(args.prefix)
    if not files:
        print(f"error: no ROS interface packages under {args.prefix}/share; are the ros-* "
              "wheels installed in this venv?", file=sys.stderr)
        return 1
    python_include, numpy_include = real_include_dirs()
    changed = [f for f in files if fix_file(f, python_include, numpy_include, args.check)]
    if args.check:
        for f in changed:
            print(f"needs fix: {f}")
        return 1 if changed else 0
    print(f"ROS wheel CMake exports: {len(changed)} fixed, "
          f"{len(files) - len(changed)} already correct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
