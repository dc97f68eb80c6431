#!/usr/bin/env python3
"""Run CPython's asyncio test suite on ferroloop and compare with the stdlib loop.

    python tests/conformance/run.py [--loop ferroloop|asyncio] [--modules M ...]
                                    [-k PATTERN] [--json OUT] [--timeout-per-module S]

Use the interpreter whose ferroloop build is under test: the tests are the
`test.test_asyncio` package installed with that interpreter.  See README.md.
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402
import supervise  # noqa: E402
from expectations import ConfigError, Expectations  # noqa: E402
from specs import BY_NAME, MODULES, PACKAGE  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loop", choices=("ferroloop", "asyncio"), default="ferroloop",
                   help="candidate loop; 'asyncio' runs the stdlib loop as the candidate, "
                        "which must give zero differences (checks the runner itself)")
    p.add_argument("--modules", nargs="+", metavar="M",
                   help="test modules to run (default: every enabled one); "
                        "prepared ones may be named here too")
    p.add_argument("--include-prepared", action="store_true",
                   help="also run the prepared (not yet enabled) modules")
    p.add_argument("-k", action="append", default=[], metavar="PATTERN",
                   help="only tests whose key or id matches this fnmatch pattern "
                        "(repeatable; a plain word matches as a substring)")
    p.add_argument("--json", metavar="OUT", help="write machine-readable results here")
    p.add_argument("--timeout-per-module", type=float, default=300, metavar="S",
                   help="wall-clock budget per module and side, restarts included "
                        "(default %(default)s)")
    p.add_argument("--timeout-per-test", type=float, default=30, metavar="S",
                   help="a test running longer is stopped and counted as a timeout "
                        "(default %(default)s; 0 disables)")
    p.add_argument("--total-timeout", type=float, metavar="S",
                   help="stop starting modules after this many seconds overall")
    p.add_argument("--reruns", type=int, default=1, metavar="N",
                   help="rerun plain regressions up to N times to tell flakes "
                        "(default %(default)s; 0 disables)")
    p.add_argument("--delivered", action="append", default=[], metavar="GROUP",
                   help="treat this expected-failure group as delivered for this run")
    p.add_argument("--tb-lines", type=int, default=12, metavar="N",
                   help="traceback lines shown per regression (default %(default)s)")
    p.add_argument("--log-dir", metavar="DIR", help="keep every worker's output here")
    p.add_argument("--data-dir", metavar="DIR", help=argparse.SUPPRESS)  # selftest.py only
    p.add_argument("--list", action="store_true", help="list the modules and exit")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show expected failures with their tracebacks")
    return p.parse_args(argv)


def _available(name):
    try:
        return importlib.util.find_spec(f"{PACKAGE}.{name}") is not None
    except ImportError:
        return False


def select_modules(args):
    if args.modules:
        unknown = [m for m in args.modules if m not in BY_NAME]
        if unknown:
            raise ConfigError(f"unknown module(s) {unknown}; see --list")
        return [BY_NAME[m] for m in args.modules]
    return [s for s in MODULES if s.enabled or args.include_prepared]


def list_modules():
    for spec in MODULES:
        state = "enabled " if spec.enabled else "prepared"
        here = "" if _available(spec.name) else "  (not in this Python)"
        note = f"  - {spec.note}" if spec.note else ""
        print(f"  {spec.name:24} {state}{here}{note}")


def check_candidate(loop):
    """Fail early, in one clear line, if the candidate cannot even be imported."""
    if loop != "ferroloop":
        return None
    code = "import ferroloop; ferroloop.new_event_loop().close(); ferroloop.EventLoopPolicy"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
    return None


def run_module(spec, args, opts, expectations, deadline):
    rep = report.ModuleReport(spec.name)
    if sys.version_info[:2] < spec.min_version or not _available(spec.name):
        rep.status = "absent"
        rep.notes.append(f"not in Python {platform.python_version()}; skipped")
        return rep
    budget = args.timeout_per_module
    if deadline is not None:
        left = deadline - time.monotonic()
        if left < 10:
            rep.status = "out-of-time"
            rep.notes.append("not started: --total-timeout reached")
            return rep
        budget = min(budget, left / 2)

    rep.baseline = supervise.run_side(spec.name, "baseline", opts, budget)
    rep.candidate = supervise.run_side(spec.name, "candidate", opts, budget)
    report.compare(rep, expectations)
    for _ in range(args.reruns):
        ids = report.rerun_candidates(rep, limit=20)
        if not ids:
            break
        again = supervise.run_side(spec.name, "candidate", opts, budget, only=ids)
        report.apply_rerun(rep, again)
    rep.status = report.module_status(rep, spec, filtered=bool(args.k),
                                      version=sys.version_info[:2])
    return rep


def progress(i, total, rep):
    if rep.baseline is None:
        line = rep.status
    else:
        k = rep.counts
        line = (f"baseline {k['baseline_pass']} passed in {rep.baseline.duration:.1f}s, "
                f"candidate {k['candidate_pass']}/{k['scored']} in {rep.candidate.duration:.1f}s"
                f", {k['regressions']} regressions: {rep.display_status}")
    print(f"[{i:2}/{total}] {rep.name:22} {line}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        list_modules()
        return 0
    try:
        expectations = Expectations(delivered=args.delivered,
                                    **({"data_dir": args.data_dir} if args.data_dir else {}))
        modules = select_modules(args)
    except ConfigError as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    problem = check_candidate(args.loop)
    if problem:
        print(f"run.py: cannot use ferroloop with {sys.executable}: {problem}", file=sys.stderr)
        return 2

    # A plain word is a substring match, as with pytest's -k.
    k = tuple(pat if any(ch in pat for ch in "*?[") else f"*{pat}*" for pat in args.k)
    opts = supervise.Options(loop=args.loop, k=k,
                             per_test_timeout=args.timeout_per_test or None,
                             not_run=tuple(expectations.not_run_on_candidate()),
                             log_dir=os.path.abspath(args.log_dir) if args.log_dir else None)
    started = time.monotonic()
    deadline = started + args.total_timeout if args.total_timeout else None
    print(f"conformance: Python {platform.python_version()} ({sys.executable}), "
          f"candidate loop: {args.loop}", flush=True)

    reports = []
    for i, spec in enumerate(modules, 1):
        rep = run_module(spec, args, opts, expectations, deadline)
        reports.append(rep)
        progress(i, len(modules), rep)

    text, totals = report.table(reports)
    print("\n" + text)
    print(report.details(reports, args.tb_lines, verbose=args.verbose))
    elapsed = round(time.monotonic() - started, 1)
    # Only patterns for modules that ran in full can be told stale.
    ran = {r.name for r in reports if r.baseline is not None} if not args.k else set()
    unused = [p for p in expectations.unused() if p.split(".", 1)[0] in ran]
    for pattern in unused:
        print(f"note: expectation pattern matched no test here: {pattern}")
    failing = [r.name for r in reports if r.failing]
    print(f"\n{'FAILED' if failing else 'OK'} in {elapsed}s"
          + (f": {', '.join(failing)}" if failing else ""))

    if args.json:
        candidate_types = {r.candidate.loop_type for r in reports if r.candidate}
        meta = dict(python=platform.python_version(), executable=sys.executable,
                    loop=args.loop, candidate_loop_types=sorted(t for t in candidate_types if t),
                    elapsed_seconds=elapsed, ok=not failing, failing_modules=failing,
                    args=vars(args))
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.as_json(reports, totals, meta, unused), f, indent=1)
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
