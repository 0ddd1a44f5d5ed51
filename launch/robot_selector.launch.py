"""Launch the BitGen robot selector on a ROS 2 distro (Humble, Jazzy, Kilted).

    ros2 launch bitgen_ros robot_selector.launch.py
    ros2 launch bitgen_ros robot_selector.launch.py demo:=true namespace:=robot1
    ros2 launch bitgen_ros robot_selector.launch.py model_dir:=/opt/models/bitgen log_level:=debug

robot_selector is a lifecycle node: this file configures it, and activates it once
configure succeeded. A configure that fails (the model cannot load) leaves it unconfigured
with the reason in its log; nothing is activated. Machines without `ros2 launch` (ROS 2
from PyPI) run the same nodes with the same arguments through `python -m bitgen_ros.runner`
(bitgen_ros/runner.py), which declares the same arguments.
"""

import os

import launch
from ament_index_python.packages import get_package_share_directory
from launch.actions import (DeclareLaunchArgument, EmitEvent, OpaqueFunction,
                            RegisterEventHandler, SetEnvironmentVariable)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

# name, default, description -- the same table as bitgen_ros.runner.LAUNCH_ARGUMENTS
ARGUMENTS = (
    ("model_dir", "", "Exported model directory; empty uses the shipped models/default."),
    ("params_file", "", "Parameters YAML for all nodes; empty uses config/robot_selector.yaml."),
    ("namespace", "", "Namespace of every node, topic and service (e.g. robot1)."),
    ("demo", "false", "Also start the generated scene source and the sample task publisher."),
    ("log_level", "info", "Log level of the nodes: debug, info, warn, error or fatal."),
)


def _nodes(context, *args, **kwargs):
    share = get_package_share_directory("bitgen_ros")
    params_file = LaunchConfiguration("params_file").perform(context) or os.path.join(
        share, "config", "robot_selector.yaml")
    model_dir = LaunchConfiguration("model_dir").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context)
    log_level = LaunchConfiguration("log_level").perform(context)
    ros_args = ["--log-level", log_level]
    overrides = [{"model_dir": model_dir}] if model_dir else []

    selector = LifecycleNode(
        package="bitgen_ros", executable="robot_selector", name="robot_selector",
        namespace=namespace, parameters=[params_file] + overrides, arguments=["--ros-args"]
        + ros_args, output="screen", emulate_tty=True)
    configure = EmitEvent(event=ChangeState(
        lifecycle_node_matcher=matches_action(selector),
        transition_id=Transition.TRANSITION_CONFIGURE))
    # Activate only after configure *succeeded* (inactive reached from configuring).
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=selector, start_state="configuring", goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(selector),
            transition_id=Transition.TRANSITION_ACTIVATE))]))
    demo = IfCondition(LaunchConfiguration("demo"))
    return [
        selector, activate, configure,
        Node(package="bitgen_ros", executable="scene_source", name="scene_source",
             namespace=namespace, parameters=[params_file], arguments=["--ros-args"] + ros_args,
             output="screen", condition=demo),
        Node(package="bitgen_ros", executable="task_publisher", name="task_publisher",
             namespace=namespace, parameters=[params_file], arguments=["--ros-args"] + ros_args,
             output="screen", condition=demo),
    ]


def _discovery_scope():
    """Keep DDS discovery on this host unless the user chose a scope (issue 7): anyone who can
    discover the node can call /bitgen/memory_edit. Humble ignores the discovery range and
    needs ROS_LOCALHOST_ONLY. Setting either variable yourself is the opt-out."""
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") or os.environ.get("ROS_LOCALHOST_ONLY"):
        return []
    actions = [SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")]
    if os.environ.get("ROS_DISTRO") == "humble":
        actions.append(SetEnvironmentVariable("ROS_LOCALHOST_ONLY", "1"))
    return actions


def generate_launch_description():
    return launch.LaunchDescription(
        _discovery_scope()
        + [DeclareLaunchArgument(name, default_value=default, description=description)
           for name, default, description in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)])
