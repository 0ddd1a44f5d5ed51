"""Shared fixtures of the ROS tests: one rclpy context and test client per test module."""
import pytest


@pytest.fixture(scope="module")
def ros():
    """rclpy initialised for this module, with the harness's TestClient (publishers,
    subscriptions and service clients of a node under test)."""
    import rclpy
    from ros_node_harness import TestClient
    rclpy.init()
    client = TestClient()
    yield client
    client.close()
    rclpy.try_shutdown()
