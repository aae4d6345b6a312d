"""Flow: map, partition by key, reduce per window, event time and joins in one
expression, built on our stages (DESIGN section 8)."""

from .flow import Flow
from .window import Window, WindowResult

__all__ = ["Flow", "Window", "WindowResult"]
