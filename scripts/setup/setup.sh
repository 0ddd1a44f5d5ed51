#!/usr/bin/env bash
# Set up the dev workspace and run the tests; what `make setup|build|test` call.
#
#   setup.sh setup   venv + pinned Python deps + ROS 2 (PyPI wheels unless a distro is sourced)
#   setup.sh build   setup, then colcon-build this package into install/
#   setup.sh test    build, then pytest on tests/ in the workspace environment
#
# Each step is skipped when a stamp holds the hash of its inputs (requirements files, msg/,
# srv/, CMakeLists.txt, ...), so a second run changes nothing and takes seconds.
# Variables: PYTHON (interpreter for a new venv, default python3.11), VENV (default .venv),
# ROS_DISTRO (set by sourcing a ROS 2 distro: use it instead of the wheels).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
case "$VENV" in /*) ;; *) VENV="$REPO/$VENV" ;; esac
export VENV
STAMPS="$VENV/.bitgen-stamps"
PY="$VENV/bin/python"
WHEELS_PYTHON_VERSION="3.11"  # the torch file on disk and the ros-* wheels are cp311

say() { printf '\033[1m[bitgen setup]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[bitgen setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

hash_of() {  # hash_of FILE... : one sha256 over the named files' contents (missing = empty)
  local f
  for f in "$@"; do printf '%s\n' "$f"; if [ -f "$f" ]; then cat "$f"; fi; done \
    | sha256sum | cut -c1-64
}
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s\n' "$2" > "$STAMPS/$1"; }

check_toolchain() {
  local cc="${CC:-cc}" cxx="${CXX:-c++}" v
  command -v "$cc" >/dev/null 2>&1 && command -v "$cxx" >/dev/null 2>&1 \
    || die "no C/C++ compiler ($cc, $cxx) found. rosidl compiles the message type support:" \
           "install one (Debian/Ubuntu: apt-get install build-essential) and re-run make."
  command -v cmake >/dev/null 2>&1 \
    || die "cmake not found. Install it (Debian/Ubuntu: apt-get install cmake) and re-run make."
  v="$(cmake --version | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)"
  [ "$(printf '%s\n3.16\n' "$v" | sort -V | head -1)" = "3.16" ] \
    || die "cmake $v is too old; ROS 2 needs cmake >= 3.16."
}

python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

make_venv() {
  if [ -x "$PY" ]; then
    local have; have="$(python_version "$PY")" \
      || die "$VENV exists but its python does not run; remove it (rm -rf $VENV) and re-run make."
    if [ -z "${ROS_DISTRO:-}" ] && [ "$have" != "$WHEELS_PYTHON_VERSION" ]; then
      die "$VENV uses Python $have; without a ROS 2 distro the ROS wheels and torch need" \
          "Python $WHEELS_PYTHON_VERSION. Remove it (rm -rf $VENV) and re-run make" \
          "(PYTHON=/path/to/python3.11 if python3.11 is not on PATH)."
    fi
    return
  fi
  local want="${PYTHON:-}"
  if [ -z "$want" ]; then
    if [ -n "${ROS_DISTRO:-}" ]; then want=python3; else want="python$WHEELS_PYTHON_VERSION"; fi
  fi
  command -v "$want" >/dev/null 2>&1 \
    || die "Python interpreter '$want' not found. Install Python $WHEELS_PYTHON_VERSION" \
           "(with its venv module) or point make at one: make test PYTHON=/path/to/python3.11"
  local have
  have="$(python_version "$want")" \
    || die "'$want' does not run as a Python interpreter: $("$want" --version 2>&1 | head -2)." \
           "Point make at a Python $WHEELS_PYTHON_VERSION: make test PYTHON=/path/to/python3.11"
  if [ -n "${ROS_DISTRO:-}" ]; then
    # The distro's rclpy is built for the system Python: the venv must be made from that
    # interpreter and see its site-packages.
    "$want" -c 'import rclpy' 2>/dev/null \
      || die "ROS_DISTRO=$ROS_DISTRO is set but '$want' cannot import rclpy. Source" \
             "/opt/ros/$ROS_DISTRO/setup.bash in this shell and use the distro's Python" \
             "(make test PYTHON=/usr/bin/python3)."
    say "creating $VENV from $want (Python $have, ROS 2 $ROS_DISTRO, system site-packages)"
    "$want" -m venv --system-site-packages "$VENV" \
      || die "could not create the venv; install the venv module (apt-get install python3-venv)."
  else
    [ "$have" = "$WHEELS_PYTHON_VERSION" ] \
      || die "'$want' is Python $have; without a ROS 2 distro the ROS 2 wheels (cp311) and the" \
             "torch build need Python $WHEELS_PYTHON_VERSION. Install it or run" \
             "make test PYTHON=/path/to/python3.11 (or source a ROS 2 distro first)."
    say "creating $VENV from $want (Python $have)"
    "$want" -m venv "$VENV" \
      || die "could not create the venv; install the venv module (apt-get install python3.11-venv)."
  fi
  # A colcon workspace that holds this checkout must not crawl the venv's share/*/package.xml.
  touch "$VENV/COLCON_IGNORE"
}

pip_install() {  # pip_install WHAT ARGS... : pinned install, with a message that says what to do
  local what="$1"; shift
  if ! "$PY" -m pip install -q --disable-pip-version-check -c "$REQS/constraints.txt" "$@"; then
    die "pip could not install the $what ($*). Check that the package registry (PyPI) is" \
        "reachable and that the pins in requirements*.txt / constraints.txt exist for this" \
        "Python and CPU ($(uname -m)), then re-run make."
  fi
}

select_requirements() {  # sets REQS: the directory whose requirements*.txt pip reads
  REQS="$REPO"
  [ -n "${ROS_DISTRO:-}" ] || return 0
  # A distro's rclpy and message modules are compiled against the system numpy (1.x on
  # Ubuntu 24.04); a numpy from PyPI in the venv would shadow it and break their import.
  # Keep the system numpy: pin it in place of ours.
  local system_numpy
  system_numpy="$("$PY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null)" || return 0
  REQS="$STAMPS/distro-requirements"
  mkdir -p "$REQS"
  cp "$REPO"/requirements*.txt "$REPO/constraints.txt" "$REQS/"
  sed -i '/^numpy==/d' "$REQS"/requirements*.txt "$REQS/constraints.txt"
  echo "numpy==$system_numpy" >> "$REQS/constraints.txt"
}

install_python_deps() {
  local h; h="$(cd "$REPO" && hash_of requirements.txt requirements-train.txt \
    requirements-dev.txt constraints.txt)-$(python_version "$PY")-${ROS_DISTRO:-wheels}"
  if stamp_ok python-deps "$h"; then return; fi
  say "installing pinned Python dependencies (requirements-dev.txt; a few minutes the first time)"
  pip_install "Python dependencies" -r "$REQS/requirements-dev.txt"
  stamp_set python-deps "$h"
}

install_cli() {  # the `bitgen` console script, from this checkout (editable, no new deps)
  local h; h="$(cd "$REPO" && hash_of setup.py)-$(python_version "$PY")"
  if stamp_ok bitgen-cli "$h" && [ -x "$(dirname "$PY")/bitgen" ]; then return; fi
  say "installing the bitgen command (pip install -e . --no-deps)"
  pip_install "the bitgen command" -e "$REPO" --no-deps --no-build-isolation
  stamp_set bitgen-cli "$h"
}

install_ros() {
  if [ -n "${ROS_DISTRO:-}" ]; then
    "$PY" -c 'import rclpy' 2>/dev/null \
      || die "ROS_DISTRO=$ROS_DISTRO is set but the venv cannot import rclpy: source" \
             "/opt/ros/$ROS_DISTRO/setup.bash before make, and make sure $VENV was created" \
             "from the distro's Python with system site-packages (rm -rf $VENV; make test)."
    if ! command -v colcon >/dev/null 2>&1 && [ ! -x "$VENV/bin/colcon" ]; then
      local h; h="$(cd "$REPO" && hash_of constraints.txt)"
      stamp_ok colcon "$h" || { pip_install "colcon build tool" colcon-common-extensions; \
                                stamp_set colcon "$h"; }
    fi
    return
  fi
  [ "$(uname -m)" = "x86_64" ] \
    || die "the ROS 2 wheels on PyPI exist for x86_64 only; on $(uname -m) install a ROS 2" \
           "distro (Humble/Jazzy/Kilted), source it and re-run make (see README, Install)."
  local h; h="$(cd "$REPO" && hash_of requirements-ros.txt constraints.txt)"
  if ! stamp_ok ros-wheels "$h"; then
    say "installing ROS 2 Kilted from PyPI wheels (requirements-ros.txt)"
    pip_install "ROS 2 wheels" -r "$REQS/requirements-ros.txt"
    stamp_set ros-wheels "$h"
  fi
  # Idempotent and fast; run every time so a reinstalled wheel gets fixed again.
  "$PY" "$REPO/scripts/setup/fix_ros_wheels.py" --check >/dev/null \
    || "$PY" "$REPO/scripts/setup/fix_ros_wheels.py" \
    || die "could not fix the ROS wheels' CMake exports (see above)."
  "$PY" -c 'import rclpy' \
    || die "rclpy does not import after installing the wheels (see the error above);" \
           "remove the venv (rm -rf $VENV) and re-run make."
}

build_inputs() {  # what the colcon build depends on; .py contents are symlinked, names are not
  (cd "$REPO" && {
    printf '%s\n' "$REPO" "$VENV" "${ROS_DISTRO:-wheels}"
    cat CMakeLists.txt package.xml
    for f in msg/*.msg srv/*.srv; do if [ -f "$f" ]; then echo "$f"; cat "$f"; fi; done
    for d in bitgen_ros bitgen_core scripts/nodes launch config models; do
      if [ -d "$d" ]; then find "$d" -path '*/__pycache__' -prune -o ! -type l -print; fi
    done | sort
  } | sha256sum | cut -c1-64)
}

link_generated_interfaces() {
  # bitgen_ros.msg/.srv and their type-support modules exist only in install/. Linking them
  # into the source package lets every process with the repo root on PYTHONPATH import the
  # whole bitgen_ros package from the checkout (git ignores these links).
  local pyver site src
  pyver="$(python_version "$PY")"
  site="install/bitgen_ros/lib/python$pyver/site-packages/bitgen_ros"
  [ -d "$REPO/$site/msg" ] || die "colcon built, but $REPO/$site/msg is missing."
  find "$REPO/bitgen_ros" -maxdepth 1 -type l \( -name msg -o -name srv -o -name '*.so' \) -delete
  for src in "$REPO/$site"/msg "$REPO/$site"/srv "$REPO/$site"/*.so; do
    ln -s "../$site/$(basename "$src")" "$REPO/bitgen_ros/$(basename "$src")"
  done
}

build_package() {
  local h; h="$(build_inputs)"
  if stamp_ok colcon-build "$h" && [ -f "$REPO/install/local_setup.bash" ] \
     && [ -e "$REPO/bitgen_ros/msg/__init__.py" ]; then
    return
  fi
  say "building bitgen_ros with colcon (msg/, srv/ -> install/)"
  # shellcheck disable=SC1091
  . "$REPO/scripts/setup/env.sh"
  (cd "$REPO" && MAKEFLAGS="${MAKEFLAGS:--j2}" colcon --log-base log build \
      --paths "$REPO" --build-base build --install-base install --symlink-install \
      --event-handlers console_cohesion+ summary+ \
      --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF) \
    || die "colcon build failed (output above, logs in $REPO/log). A missing compiler or" \
           "cmake, or an incomplete ROS install, are the usual causes: rm -rf build install" \
           "and re-run make."
  link_generated_interfaces
  stamp_set colcon-build "$h"
}

run_tests() {
  # shellcheck disable=SC1091
  . "$REPO/scripts/setup/env.sh"
  export BITGEN_REQUIRE_ROS=1  # under make, a missing rclpy fails the ROS tests, never skips
  cd "$REPO"
  # Arguments narrow the run (`make test PYTEST_ARGS="tests/ros -x"`); with no test path
  # among them the whole tests/ directory runs.
  local arg has_path=0
  for arg in "$@"; do if [ -e "${arg%%::*}" ]; then has_path=1; fi; done
  [ "$has_path" = 1 ] || set -- tests "$@"
  say "running pytest $*"
  exec "$PY" -m pytest "$@"
}

cmd="${1:-test}"; shift || true
case "$cmd" in
  setup) make_venv; select_requirements; install_python_deps; install_cli; install_ros ;;
  build) check_toolchain; make_venv; select_requirements; install_python_deps; install_cli; install_ros
         build_package ;;
  test)  check_toolchain; make_venv; select_requirements; install_python_deps; install_cli; install_ros
         build_package
         run_tests "$@" ;;
  *) die "unknown command '$cmd' (use setup, build or test)" ;;
esac
