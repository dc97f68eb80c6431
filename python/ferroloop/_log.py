"""asyncio's loop logger, looked up when used.

Programs and test suites that watch or silence the loop's messages patch
``asyncio.base_events.logger``; looking it up at call time (instead of
binding the logger object at import) keeps that working on ferroloop.
"""

from asyncio import base_events


def logger():
    return base_events.logger
