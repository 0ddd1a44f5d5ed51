"""The `main()` of a simple (non-lifecycle) node: init, build, spin, clean shutdown.

Ctrl-C and `ros2 launch`'s SIGINT/SIGTERM end the node quietly; a configuration the node
refuses (bad parameter, missing file: the exception types it names) ends it with its reason
on one line and exit status 2, instead of a traceback; the node and the context are always
torn down.
"""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

EXIT_BAD_CONFIGURATION = 2


def run_node(name: str, make_node: Callable[[], Node], args=None, *,
             spin: Callable[[Node], None] = rclpy.spin,
             config_errors: tuple[type[BaseException], ...] = (ValueError,)) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except config_errors as e:
        print(f"{name}: {e}", flush=True)
        raise SystemExit(EXIT_BAD_CONFIGURATION)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
