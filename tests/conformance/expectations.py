"""Loads and checks exclusions.py and expected_failures.py; matches keys."""

import fnmatch
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))


class ConfigError(ValueError):
    pass


def _check_reason(where, reason):
    if not isinstance(reason, str) or not reason.strip() or "\n" in reason:
        raise ConfigError(f"{where}: needs a one-line, non-empty reason, got {reason!r}")


def _check_entries(where, entries):
    if not isinstance(entries, dict):
        raise ConfigError(f"{where}: expected a dict of pattern -> reason")
    for pattern, reason in entries.items():
        _check_reason(f"{where}[{pattern!r}]", reason)
    return dict(entries)


def _load(data_dir, name):
    path = os.path.join(data_dir, name + ".py")
    spec = importlib.util.spec_from_file_location(f"conformance_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (OSError, SyntaxError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return module


class Expectations:
    def __init__(self, delivered=(), data_dir=HERE):
        """`data_dir` holds exclusions.py and expected_failures.py (another
        directory only for testing the runner itself)."""
        exclusions = _load(data_dir, "exclusions")
        expected_failures = _load(data_dir, "expected_failures")
        self.exclusions = _check_entries("exclusions.EXCLUSIONS", exclusions.EXCLUSIONS)
        self.groups = {}
        for name, group in expected_failures.GROUPS.items():
            where = f"expected_failures.GROUPS[{name!r}]"
            unknown = set(group) - {"delivered", "feature", "tests", "run"}
            if unknown:
                raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
            _check_reason(f"{where}.feature", group.get("feature"))
            self.groups[name] = dict(
                delivered=bool(group.get("delivered")),
                run=group.get("run", True),
                tests=_check_entries(f"{where}.tests", group.get("tests", {})),
            )
        missing = set(delivered) - set(self.groups)
        if missing:
            raise ConfigError(f"--delivered: no such group(s) {sorted(missing)}; "
                              f"known: {sorted(self.groups)}")
        self.active = {name: g for name, g in self.groups.items()
                       if not g["delivered"] and name not in delivered}
        self._used = set()

    def _find(self, key, entries):
        for pattern, reason in entries.items():
            if fnmatch.fnmatchcase(key, pattern):
                self._used.add(pattern)
                return reason
        return None

    def excluded(self, key):
        """The reason `key` is excluded, or None."""
        return self._find(key, self.exclusions)

    def expected_failure(self, key):
        """(group, reason) if `key` is expected to fail, else None."""
        for name, group in self.active.items():
            reason = self._find(key, group["tests"])
            if reason is not None:
                return name, reason
        return None

    def not_run_on_candidate(self):
        patterns = list(self.exclusions)
        for group in self.active.values():
            if not group["run"]:
                patterns.extend(group["tests"])
        return patterns

    def unused(self):
        """Patterns that matched none of the keys seen so far (maybe stale)."""
        every = list(self.exclusions)
        for group in self.active.values():
            every.extend(group["tests"])
        return [p for p in every if p not in self._used]
