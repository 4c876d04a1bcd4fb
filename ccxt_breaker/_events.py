"""Frozen event objects and their delivery to listeners.

A listener is any callable taking one event. It may be a coroutine function: its
coroutine then runs as a task, bounded in time and in number, so a listener that
raises or hangs can never break or slow a call, nor grow memory.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CallRejected", "Event", "Listener", "StateChanged", "emit"]

logger = logging.getLogger("ccxt_breaker")

# An async listener that takes longer than this is cancelled.
LISTENER_TIMEOUT = 10.0
# Async listener tasks allowed in flight at once; events beyond are dropped, logged.
MAX_PENDING = 256


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A circuit moved from ``old_state`` to ``new_state``.

    ``reason`` says why in words; ``cause`` summarises the error behind an opening
    (``{type, message}``); ``retry_after`` is as in ``breaker.retry_after`` just after
    the change; ``time`` is epoch seconds; ``name`` is the configured ``name``, if any.
    """

    group: str
    old_state: str
    new_state: str
    reason: str
    cause: dict[str, str] | None
    retry_after: float | None
    time: float
    name: str | None = None


@dataclass(frozen=True, slots=True)
class CallRejected:
    """A call was refused without being sent (or, with ``shadow``, would have been).

    ``name`` is the configured ``name``, if any.
    """

    group: str
    endpoint: str | None
    state: str
    retry_after: float | None
    shadow: bool
    time: float
    name: str | None = None


Event = StateChanged | CallRejected
Listener = Callable[[Event], Awaitable[Any] | None]

_pending: set[asyncio.Task[Any]] = set()


async def _bounded(awaitable: Awaitable[Any], name: str) -> None:
    try:
        await asyncio.wait_for(awaitable, LISTENER_TIMEOUT)
    except TimeoutError:
        logger.error("listener %s timed out after %g s", name, LISTENER_TIMEOUT)
    except Exception:
        logger.exception("listener %s raised", name)


def emit(listeners: tuple[Listener, ...], event: Event) -> None:
    """Deliver ``event`` to each listener; never raises."""
    for listener in listeners:
        name = getattr(listener, "__qualname__", repr(listener))
        try:
            result = listener(event)
            if not inspect.isawaitable(result):
                continue
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None or len(_pending) >= MAX_PENDING:
                why = "no running event loop" if loop is None else "too many pending"
                logger.error("dropped %s for listener %s: %s", event, name, why)
                if inspect.iscoroutine(result):
                    result.close()
                continue
            task = loop.create_task(_bounded(result, name))
            _pending.add(task)
            task.add_done_callback(_pending.discard)
        except Exception:
            logger.exception("listener %s raised", name)
