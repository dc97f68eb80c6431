"""Making asyncio create ferroloop loops."""

from __future__ import annotations

import asyncio

from ._loop import EventLoop


def new_event_loop() -> EventLoop:
    """A new ferroloop event loop."""
    return EventLoop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An asyncio policy whose loops are ferroloop loops; everything else
    (the current-loop bookkeeping, child watchers on older Pythons) is the
    default policy's."""

    _loop_factory = EventLoop


def install() -> None:
    """Make ``asyncio.new_event_loop()``, ``asyncio.run()`` and every other
    policy-based loop creation return ferroloop loops."""
    asyncio.set_event_loop_policy(EventLoopPolicy())
