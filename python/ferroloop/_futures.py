"""Small future helpers shared by the transports and the executor glue."""

from __future__ import annotations


def set_result_unless_cancelled(fut, result):
    """Completes ``fut`` unless its waiter gave up on it meanwhile."""
    if not fut.cancelled():
        fut.set_result(result)


def set_exception_unless_cancelled(fut, exc):
    if not fut.cancelled():
        fut.set_exception(exc)
