# Environment of the dev workspace: source it (`. scripts/setup/env.sh`) in bash to get the
# venv, ROS 2 (PyPI wheels or the sourced distro) and the colcon-built bitgen_ros interfaces.
# Used by scripts/setup/setup.sh for `make build` and `make test`; safe to source twice.
#
# After sourcing:
#   python            -> the project venv
#   import rclpy      -> the distro's rclpy (ROS_DISTRO set) or the ros-rclpy wheel
#   import bitgen_ros -> the source tree (repo root leads PYTHONPATH); bitgen_ros.msg/.srv
#                        are links into install/ made by the build step
#   ros2-style tools  -> AMENT_PREFIX_PATH names install/bitgen_ros (+ the venv for wheels)

_bitgen_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_bitgen_venv="${VENV:-$_bitgen_repo/.venv}"
case "$_bitgen_venv" in /*) ;; *) _bitgen_venv="$_bitgen_repo/$_bitgen_venv" ;; esac

_bitgen_prepend() {  # _bitgen_prepend VAR DIR: put DIR first in the path list VAR, once
  local var="$1" dir="$2" current
  current="${!var:-}"
  current=":${current}:"
  current="${current//:$dir:/:}"
  current="${current#:}"
  current="${current%:}"
  export "$var=$dir${current:+:$current}"
}

export VIRTUAL_ENV="$_bitgen_venv"
_bitgen_prepend PATH "$_bitgen_venv/bin"

if [ -z "${ROS_DISTRO:-}" ]; then
  # The ros-* wheels install into the venv prefix, which holds their share/ament_index; ament
  # and CMake find the underlay only through these variables (fix 2 of the PyPI notes).
  _bitgen_prepend AMENT_PREFIX_PATH "$_bitgen_venv"
  _bitgen_prepend CMAKE_PREFIX_PATH "$_bitgen_venv"
fi

if [ -f "$_bitgen_repo/install/local_setup.bash" ]; then
  # colcon's scripts read unset variables; do not let a caller's `set -u` abort them.
  case $- in *u*) _bitgen_had_u=1; set +u ;; *) _bitgen_had_u=0 ;; esac
  # shellcheck disable=SC1091
  . "$_bitgen_repo/install/local_setup.bash"
  [ "$_bitgen_had_u" = 1 ] && set -u
  unset _bitgen_had_u
fi

# Source tree first: bitgen_core/, training/ and bitgen_ros/ import from the checkout, so
# edits and new files need no rebuild.
_bitgen_prepend PYTHONPATH "$_bitgen_repo"

# Discovery stays on this host unless the user chose otherwise (issue 7): setting either
# variable is the opt-out. Humble ignores the range and needs ROS_LOCALHOST_ONLY.
if [ -z "${ROS_AUTOMATIC_DISCOVERY_RANGE:-}" ] && [ -z "${ROS_LOCALHOST_ONLY:-}" ]; then
  export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
  [ "${ROS_DISTRO:-}" = humble ] && export ROS_LOCALHOST_ONLY=1
fi

unset _bitgen_repo _bitgen_venv
unset -f _bitgen_prepend
