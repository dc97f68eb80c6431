"""ferroloop: Python's asyncio event loop, implemented in Rust.

A drop-in replacement for the stdlib loop::

    import ferroloop
    ferroloop.run(main())                      # like asyncio.run(main())

    asyncio.run(main(), loop_factory=ferroloop.new_event_loop)   # 3.12+
    with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as r:  # 3.11+
        r.run(main())

    ferroloop.install()                        # asyncio.run() now uses ferroloop
    asyncio.run(main())

or, without touching the program: ``python -m ferroloop script.py``.
"""

from ._core import Handle, TimerHandle
from ._loop import EventLoop
from ._policy import EventLoopPolicy, install, new_event_loop
from ._runner import run
from ._watchdog import BlockingReport

Loop = EventLoop

__all__ = [
    "BlockingReport",
    "EventLoop",
    "EventLoopPolicy",
    "Handle",
    "Loop",
    "TimerHandle",
    "install",
    "new_event_loop",
    "run",
]
__version__ = "0.1.0"
