"""Turning a CPython test module into the list of tests one side runs.

Every test gets two names:
  id   what unittest calls it, minus the "test.test_asyncio." prefix;
  key  the name both sides agree on.  It equals the id, except for tests that
       come from a LoopMixin: those are "<module>.<mixin>.<test>" on both the
       candidate class and the baseline selector class.
Exclusions, expected failures, -k and the reports all use keys.
"""

import unittest
from dataclasses import dataclass

from specs import PACKAGE


@dataclass
class Planned:
    test: unittest.TestCase
    id: str
    key: str
    # False for tests that only the baseline runs (extra methods on a
    # selector-specific class); they are not scored.
    comparable: bool = True


def short_id(test_id):
    prefix = PACKAGE + "."
    return test_id[len(prefix):] if test_id.startswith(prefix) else test_id


def _resolve(module, dotted):
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _testcase_classes(module):
    # Same selection as unittest.TestLoader.loadTestsFromModule, in its order.
    for name in dir(module):
        obj = getattr(module, name)
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase):
            yield obj


def _plan_class(loader, cls, key_for=None):
    """`key_for(method)` gives a mixin key, or None for a test only this side has."""
    for name in loader.getTestCaseNames(cls):
        test = cls(name)
        tid = short_id(test.id())
        if key_for is None:
            yield Planned(test, tid, tid)
        else:
            key = key_for(name)
            yield Planned(test, tid, key or tid, comparable=key is not None)


def candidate_class(module, mixin_spec, make_loop):
    """A concrete TestCase running `mixin_spec`'s tests on candidate loops."""
    bases = tuple(getattr(module, name) for name in (mixin_spec.bases or (mixin_spec.mixin,)))
    testcase = _resolve(module, mixin_spec.testcase)
    name = mixin_spec.mixin + "_OnCandidate"

    def hook(self):
        return make_loop()

    namespace = {
        mixin_spec.hook: hook,
        # Module fixtures (setUpModule/tearDownModule) are keyed on __module__.
        "__module__": module.__name__,
        "__qualname__": name,
    }
    return type(name, bases + (testcase,), namespace)


def plan(module, spec, side, make_loop=None):
    """All tests of `module` that `side` ("baseline" or "candidate") runs."""
    loader = unittest.TestLoader()
    mixins = [(m, getattr(module, m.mixin)) for m in spec.mixins]
    modname = module.__name__.rsplit(".", 1)[-1]

    def mixin_key(method):
        for m, cls in mixins:
            if method in dir(cls):
                return f"{modname}.{m.mixin}.{method}"
        return None

    def is_variant(cls):
        # One of the module's per-selector classes built on a compared mixin.
        return any(issubclass(cls, mcls) for _, mcls in mixins)

    planned = []
    baseline_reps = set()
    for m, _ in mixins:
        rep = next((getattr(module, n) for n in m.baseline if hasattr(module, n)), None)
        if rep is None:
            raise LookupError(f"{modname}: none of {m.baseline} exists for {m.mixin}")
        baseline_reps.add(rep)

    for cls in _testcase_classes(module):
        if is_variant(cls):
            if side == "baseline" and cls in baseline_reps:
                planned.extend(_plan_class(loader, cls, mixin_key))
            continue
        planned.extend(_plan_class(loader, cls))

    if side == "candidate":
        for m, _ in mixins:
            cls = candidate_class(module, m, make_loop)
            for p in _plan_class(loader, cls, mixin_key):
                # A candidate class may inherit other mixins' tests too (the
                # subprocess one derives from EventLoopTestsMixin): keep only
                # those keyed to this mixin, so each test runs once.
                if p.key == f"{modname}.{m.mixin}.{p.test._testMethodName}":
                    planned.append(p)
    return planned
