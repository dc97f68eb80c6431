"""Shared fixtures: every loop test runs once per event loop implementation.

The ``loop_factory`` fixture is parametrized with ``asyncio`` (the stdlib
selector loop, the reference behaviour) and ``ferroloop``.  A test that
behaves differently on the two parametrizations is a failing test.

ferroloop is used when ``import ferroloop`` works.  While it is not built the
ferroloop parametrization is skipped, unless ``FERROLOOP_REQUIRED=1`` is set in
the environment (CI sets it), in which case a missing ferroloop is an error.
"""

import asyncio
import os
import sys

import pytest

FERROLOOP_REQUIRED = os.environ.get("FERROLOOP_REQUIRED", "") == "1"

PY_VERSION = sys.version_info[:2]


def _import_ferroloop():
    """Return (module, None) or (None, reason).

    Only ImportError means "not built / not installed"; any other exception
    raised while importing the package is a bug and propagates.
    """
    try:
        import ferroloop  # noqa: F401
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return ferroloop, None


class LoopFlavor:
    """A loop implementation under test.

    Calling the object returns a new event loop, so it can be passed anywhere
    asyncio expects a ``loop_factory`` (``asyncio.Runner``, ``asyncio.run`` on
    3.12+).  The other attributes give the implementation's public API so that
    tests can exercise the same entry points on both implementations.
    """

    def __init__(self, name, *, new_event_loop, loop_class, policy_class,
                 run, install, module):
        self.name = name
        self.new_event_loop = new_event_loop
        self.loop_class = loop_class
        self.policy_class = policy_class
        self.run_function = run
        self.install = install
        self.module = module

    def __call__(self):
        return self.new_event_loop()

    def __repr__(self):
        return f"<LoopFlavor {self.name}>"


def _asyncio_install():
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


def asyncio_flavor():
    return LoopFlavor(
        "asyncio",
        # On Unix asyncio.SelectorEventLoop is _UnixSelectorEventLoop, the
        # loop asyncio.new_event_loop() returns with the default policy.  It
        # is used directly so that a policy left behind cannot change it.
        new_event_loop=asyncio.SelectorEventLoop,
        loop_class=asyncio.SelectorEventLoop,
        policy_class=asyncio.DefaultEventLoopPolicy,
        run=asyncio.run,
        install=_asyncio_install,
        module=asyncio,
    )


def ferroloop_flavor():
    ferroloop, reason = _import_ferroloop()
    if ferroloop is None:
        if FERROLOOP_REQUIRED:
            pytest.fail(
                "FERROLOOP_REQUIRED=1 but ferroloop cannot be imported "
                f"({reason})", pytrace=False)
        pytest.skip(f"ferroloop is not importable ({reason}); "
                    "set FERROLOOP_REQUIRED=1 to make this an error")
    return LoopFlavor(
        "ferroloop",
        new_event_loop=ferroloop.new_event_loop,
        loop_class=ferroloop.EventLoop,
        policy_class=ferroloop.EventLoopPolicy,
        run=ferroloop.run,
        install=ferroloop.install,
        module=ferroloop,
    )


_FLAVORS = {"asyncio": asyncio_flavor, "ferroloop": ferroloop_flavor}


def _import_ferroloop_for_report():
    try:
        return _import_ferroloop()
    except Exception as exc:  # reported here; each ferroloop test errors too
        return None, f"import raised {type(exc).__name__}: {exc}"


def pytest_report_header(config):
    ferroloop, reason = _import_ferroloop_for_report()
    if ferroloop is None:
        state = f"NOT importable ({reason})"
    else:
        state = f"importable from {getattr(ferroloop, '__file__', '?')}"
    return [f"ferroloop: {state}; FERROLOOP_REQUIRED={int(FERROLOOP_REQUIRED)}"]


def pytest_terminal_summary(terminalreporter):
    ferroloop, reason = _import_ferroloop_for_report()
    if ferroloop is None and not FERROLOOP_REQUIRED:
        terminalreporter.write_line(
            f"NOTE: ferroloop is not importable ({reason}), so no test ran "
            f"against it. Set FERROLOOP_REQUIRED=1 to make that an error.",
            yellow=True, bold=True)


@pytest.fixture(params=["asyncio", "ferroloop"])
def loop_factory(request):
    """A callable returning a new event loop of the implementation under test.

    Test ids read ``test_name[asyncio]`` / ``test_name[ferroloop]``.
    """
    return _FLAVORS[request.param]()


@pytest.fixture
def loop(loop_factory):
    """A fresh loop of the implementation under test, closed after the test."""
    asyncio.set_event_loop(None)
    lp = loop_factory()
    try:
        yield lp
    finally:
        try:
            if not lp.is_closed():
                lp.close()
        finally:
            asyncio.set_event_loop(None)


@pytest.fixture
def stdlib_loop():
    """A stdlib asyncio loop used as a reference inside a test (for example to
    compute what asyncio does on the running Python version)."""
    asyncio.set_event_loop(None)
    lp = asyncio.SelectorEventLoop()
    try:
        yield lp
    finally:
        if not lp.is_closed():
            lp.close()
        asyncio.set_event_loop(None)


def _cancel_all_tasks(loop):
    # Same as asyncio.runners._cancel_all_tasks (a private helper).
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler({
                "message": "unhandled exception during asyncio.run() shutdown",
                "exception": task.exception(),
                "task": task,
            })


def run_with_factory(coro, loop_factory, *, debug=None):
    """Run ``coro`` like ``asyncio.run(coro, debug=debug)`` on a loop made by
    ``loop_factory`` and return its result.

    3.12+: asyncio.run(loop_factory=...); 3.11: asyncio.Runner(loop_factory=...);
    3.10: the same steps as asyncio.run done by hand (like the Runner, the
    loop is not set as the current event loop when a factory is given).
    """
    if PY_VERSION >= (3, 12):
        return asyncio.run(coro, debug=debug, loop_factory=loop_factory)
    if PY_VERSION >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=loop_factory) as runner:
            return runner.run(coro)
    if asyncio._get_running_loop() is not None:
        coro.close()
        raise RuntimeError(
            "asyncio.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(coro):
        raise ValueError(f"a coroutine was expected, got {coro!r}")
    loop = loop_factory()
    try:
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(coro)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


@pytest.fixture
def run(loop_factory):
    """``run(coro, debug=None)``: asyncio.run on the implementation under test."""
    def _run(coro, *, debug=None):
        return run_with_factory(coro, loop_factory, debug=debug)
    return _run
