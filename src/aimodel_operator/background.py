"""Tasks that must run as long as the operator does: none may end, and stopping cancels them
and says which would not end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Background:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=name))

    def ended(self) -> list[str]:
        """The names of tasks that ended: any is a reason to restart the operator."""
        return [t.get_name() for t in self.tasks if t.done()]

    async def stop(self, timeout: float = 5) -> None:
        for task in self.tasks:
            task.cancel()
        if not self.tasks:
            return
        _, pending = await asyncio.wait(self.tasks, timeout=timeout)
        if pending:
            log.warning("tasks not ending: %s", ", ".join(sorted(t.get_name() for t in pending)))
            for task in pending:
                log.warning("task %s stack: %s", task.get_name(), task.get_stack(limit=5))
