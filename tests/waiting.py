"""Polling helper for tests: wait for a condition with a deadline instead of sleeping.

No assertions about timing: the deadline only bounds how long a broken run hangs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``pred`` every 10 ms until it is truthy and return that value; AssertionError
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
