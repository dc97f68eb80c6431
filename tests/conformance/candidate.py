"""Plugging the loop under test into asyncio, and counting the loops tests make.

Runs inside the worker process, before the CPython test module is imported.
"""

import asyncio
import contextlib
import functools
import threading
from asyncio import base_events
from dataclasses import dataclass


@dataclass
class Candidate:
    name: str
    policy_cls: type
    # Makes a loop without going through the policy (for the mixin classes).
    make_loop: object
    loop_type: type


def load(name):
    if name == "ferroloop":
        import ferroloop
        probe = ferroloop.new_event_loop()
        loop_type = type(probe)
        probe.close()
        return Candidate(name, ferroloop.EventLoopPolicy, ferroloop.new_event_loop, loop_type)
    if name == "asyncio":
        # A distinct subclass, so that --loop asyncio goes through exactly the
        # plumbing ferroloop does: the default policy is replaced and the
        # policy resets inside the tests must come back to it.
        class StdlibCandidatePolicy(asyncio.DefaultEventLoopPolicy):
            pass
        return Candidate(name, StdlibCandidatePolicy, asyncio.SelectorEventLoop,
                         asyncio.SelectorEventLoop)
    raise ValueError(f"unknown loop {name!r}")


class LoopCounter:
    """Counts loops created since the last take().

    "candidate": returned by the candidate's factory or policy.
    "stdlib": any other asyncio BaseEventLoop (test_utils.TestLoop, mocked
    BaseEventLoop() fixtures, explicit SelectorEventLoop()).
    "foreign": the candidate policy returned something not of the candidate type.
    """

    def __init__(self):
        self._local = threading.local()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("candidate", "stdlib", "foreign"), 0)

    def add(self, kind):
        with self._lock:
            self._counts[kind] += 1

    def take(self):
        with self._lock:
            counts = dict(self._counts)
            for kind in self._counts:
                self._counts[kind] = 0
        return counts

    @contextlib.contextmanager
    def inside_factory(self):
        # In --loop asyncio the candidate is itself a BaseEventLoop; this keeps
        # its construction from also being counted as a stdlib loop.
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth

    def in_factory(self):
        return getattr(self._local, "depth", 0) > 0

    def tracked(self, factory, loop_type):
        """Wrap a loop factory so that what it returns is counted."""
        @functools.wraps(factory)
        def make(*args, **kwargs):
            outermost = not self.in_factory()
            with self.inside_factory():
                loop = factory(*args, **kwargs)
            if outermost:
                self.add("candidate" if isinstance(loop, loop_type) else "foreign")
            return loop
        return make


def count_stdlib_loops(counter):
    original = base_events.BaseEventLoop.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        if not counter.in_factory():
            counter.add("stdlib")
        original(self, *args, **kwargs)

    base_events.BaseEventLoop.__init__ = __init__


class PluginError(RuntimeError):
    pass


def install(candidate, counter):
    """Make the candidate asyncio's default policy; return the policy class used.

    Test modules reset the policy with set_event_loop_policy(None), after which
    asyncio builds a fresh `asyncio.DefaultEventLoopPolicy()` (looked up on the
    package by events._init_event_loop_policy on 3.10-3.13), so that attribute
    is what has to point at the candidate.
    """
    policy_cls = _count_policy_loops(candidate.policy_cls, counter, candidate.loop_type)
    asyncio.DefaultEventLoopPolicy = policy_cls
    asyncio.set_event_loop_policy(None)
    check_policy(policy_cls)

    loop = asyncio.new_event_loop()
    try:
        if not isinstance(loop, candidate.loop_type):
            raise PluginError(f"asyncio.new_event_loop() returned {type(loop)!r}, "
                              f"expected {candidate.loop_type!r}")
    finally:
        loop.close()
    counter.take()
    return policy_cls


def check_policy(policy_cls):
    asyncio.set_event_loop_policy(None)
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(None)
    if not isinstance(policy, policy_cls):
        raise PluginError(f"after set_event_loop_policy(None) the policy is "
                          f"{type(policy)!r}, not the candidate's {policy_cls!r}")


def _count_policy_loops(policy_cls, counter, loop_type):
    tracked = counter.tracked(policy_cls.new_event_loop, loop_type)

    def new_event_loop(self):
        return tracked(self)

    try:
        # Patch in place where possible: tests compare policy classes, and a
        # wrapper subclass would be one more class than the real setup has.
        policy_cls.new_event_loop = new_event_loop
        return policy_cls
    except TypeError:  # an extension type that refuses new attributes
        return type(policy_cls.__name__, (policy_cls,), {"new_event_loop": new_event_loop})


def policy_is_foreign(policy_cls):
    """A test left a policy of its own installed (None means: default, fine)."""
    current = asyncio.events._event_loop_policy
    return current is not None and not isinstance(current, policy_cls)
