"""Which CPython test modules the conformance run covers, and how each meets the loop.

Most modules get their loops from asyncio's policy (asyncio.new_event_loop,
asyncio.run, IsolatedAsyncioTestCase), so installing the candidate policy is
enough.  A few keep their loop-generic tests in a mixin and make one concrete
TestCase per selector (EPoll, Poll, Select, ...), each constructing a stdlib
SelectorEventLoop itself.  For those, a `LoopMixin` entry tells the worker how
to build one more concrete class whose loop hook returns a candidate loop, and
which of the module's own classes stands in as the baseline for the same tests.
"""

from dataclasses import dataclass, field

PACKAGE = "test.test_asyncio"

# Baseline stand-in for the candidate class: the selector CPython picks by
# default on Linux first, so the baseline is what users of the stdlib loop get.
SELECTOR_CLASSES = ("EPollEventLoopTests", "PollEventLoopTests", "SelectEventLoopTests")


@dataclass(frozen=True)
class LoopMixin:
    # Mixin whose test methods are compared; also names them in reports:
    # "<module>.<mixin>.<test>" whichever class really ran the test.
    mixin: str
    # Classes (from the test module) the candidate class derives from, before
    # the TestCase base.  Defaults to just the mixin.
    bases: tuple = ()
    # TestCase base, as an attribute path inside the test module.
    testcase: str = "test_utils.TestCase"
    # Method the mixin calls to get its loop.
    hook: str = "create_event_loop"
    # The module's own concrete classes, in order of preference, for the baseline.
    baseline: tuple = SELECTOR_CLASSES


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    min_version: tuple = (3, 10)
    # False: a prepared entry, run only when named with --modules or with
    # --include-prepared (features the loop does not have yet).
    enabled: bool = True
    mixins: tuple = ()
    # First Python version on which the module's tests get loops from the
    # policy (or a LoopMixin); from then on, a candidate run that created no
    # candidate loop fails loudly, since the candidate was not plugged in.
    # None: by CPython's design every test here runs on stdlib fixture loops
    # (test_utils.TestLoop, a mocked BaseEventLoop) or on none, so the module
    # runs only to catch policy-level breakage and says nothing about the loop.
    candidate_loops_since: tuple = (3, 10)
    note: str = ""


_EVENTS_MIXINS = (
    # The module's selector classes also attach a SafeChildWatcher in setUp
    # (via UnixEventLoopTestsMixin).  Only the subprocess tests need it, and it
    # requires SIGCHLD handling from the loop, so the generic tests run on a
    # class without it and the subprocess tests on one with it.
    LoopMixin("EventLoopTestsMixin"),
    LoopMixin("SubprocessTestsMixin",
              bases=("UnixEventLoopTestsMixin", "SubprocessTestsMixin")),
)

MODULES = (
    ModuleSpec("test_tasks"),
    ModuleSpec("test_futures", candidate_loops_since=None,
               note="every test runs on test_utils.TestLoop, none on the candidate"),
    ModuleSpec("test_futures2"),
    ModuleSpec("test_locks"),
    ModuleSpec("test_queues", candidate_loops_since=(3, 11)),
    ModuleSpec("test_taskgroups", min_version=(3, 11)),
    ModuleSpec("test_timeouts", min_version=(3, 11)),
    ModuleSpec("test_waitfor"),
    ModuleSpec("test_context"),
    ModuleSpec("test_pep492", candidate_loops_since=None,
               note="every test runs on a BaseEventLoop with a mocked selector"),
    ModuleSpec("test_runners", candidate_loops_since=None,
               note="asyncio.run/Runner get mocked BaseEventLoops from a test policy"),
    ModuleSpec("test_sock_lowlevel", mixins=(LoopMixin("BaseSockTestsMixin"),)),
    ModuleSpec("test_events", mixins=_EVENTS_MIXINS),

    # Networking (transports, servers, streams, TLS).
    ModuleSpec("test_streams"),
    ModuleSpec("test_server",
               mixins=(LoopMixin("BaseStartServer", testcase="unittest.TestCase",
                                 hook="new_loop",
                                 baseline=("SelectorStartServerTests",)),)),
    ModuleSpec("test_buffered_proto",
               mixins=(LoopMixin("BaseTestBufferedProtocol",
                                 testcase="unittest.TestCase", hook="new_loop",
                                 baseline=("BufferedProtocolSelectorTests",)),)),
    ModuleSpec("test_sendfile", mixins=(LoopMixin("SendfileTestsBase"),)),
    ModuleSpec("test_protocols", candidate_loops_since=None),
    ModuleSpec("test_transports", candidate_loops_since=None),
    ModuleSpec("test_ssl", min_version=(3, 11)),
    ModuleSpec("test_sslproto",
               mixins=(LoopMixin("BaseStartTLS", testcase="unittest.TestCase",
                                 hook="new_loop",
                                 baseline=("SelectorStartTLSTests",)),)),
    ModuleSpec("test_unix_events",
               note="mostly stdlib internals run on stdlib loops; the rest on the candidate"),
    ModuleSpec("test_base_events",
               note="mostly BaseEventLoop internals run on stdlib loops"),
    ModuleSpec("test_threads"),

    ModuleSpec("test_subprocess"),
    # asyncio.staggered (happy eyeballs' racing helper); its tests first
    # ship with 3.13.
    ModuleSpec("test_staggered", min_version=(3, 13)),

    # Prepared: switched on as the matching ferroloop features land.
    ModuleSpec("test_eager_task_factory", min_version=(3, 12)),
)

BY_NAME = {spec.name: spec for spec in MODULES}
