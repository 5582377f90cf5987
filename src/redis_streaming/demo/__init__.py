"""The local web demo: a FastAPI app that shows a Redis stream and its consumer groups live.

Import ``create_app`` and ``DemoConfig`` from here; the demo adds nothing to the library's API.
"""

from .app import create_app
from .config import DemoConfig

__all__ = ["DemoConfig", "create_app"]
