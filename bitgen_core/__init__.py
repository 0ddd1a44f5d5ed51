"""BitGen core: the tiny ternary vision-language robot-selection model. Imports no ROS."""

__version__ = "0.1.0"
