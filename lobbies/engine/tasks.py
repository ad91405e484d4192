"""Fire-and-forget tasks that are not garbage-collected before they finish.

asyncio keeps only a weak reference to a task; one spawned from a callback (a pair timeout, a
close requested while sending elsewhere) must be held somewhere until it is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

_running: set[asyncio.Task[Any]] = set()


def spawn(coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coroutine`` in the background, keeping it alive until it finishes."""
    task = asyncio.ensure_future(coroutine)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task
