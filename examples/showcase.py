"""Run every example on asyncio's own loop and on ferroloop, side by side.

Each example is an ordinary asyncio program. It runs twice as a
subprocess: ``python example.py`` (the stdlib loop) and
``python -m ferroloop example.py`` (the same file, unmodified, on ferroloop).
A pair of runs passes when

  * both exit with status 0,
  * each says it ran on the loop it was meant to ("event loop: ..." line),
  * both print the same "RESULT: ..." lines (at least one).

The table then shows the wall-clock time of each run. These are plain
measurements on this machine, taken once (or the median of --repeat runs):
they include starting the interpreter, and most examples spend nearly all of
their time in deliberate sleeps, so their times are about equal by design.
The micro-benchmark's per-section timings, measured inside the program, are
shown separately.

Usage: python examples/showcase.py [--repeat N] [--quiet] [--timeout S] [NAME ...]
Exit status: 0 if every example passed on both loops, 1 otherwise.
"""

from __future__ import annotations

import argparse
import difflib
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOOPS = ("asyncio", "ferroloop")


@dataclass
class Run:
    loop: str
    seconds: float
    returncode: int | None  # None: timed out
    stdout: str
    stderr: str

    def lines(self, prefix):
        return [line for line in self.stdout.splitlines() if line.startswith(prefix)]

    @property
    def results(self):
        return self.lines("RESULT:")

    @property
    def loop_line(self):
        found = self.lines("event loop:")
        return found[0] if found else ""

    def problems(self):
        """What is wrong with this run on its own, if anything."""
        found = []
        if self.returncode is None:
            return [f"timed out after {self.seconds:.0f} s"]
        if self.returncode != 0:
            found.append(f"exit status {self.returncode}")
        if not self.results:
            found.append("no RESULT lines")
        on_ferroloop = "ferroloop" in self.loop_line
        if not self.loop_line:
            found.append("no 'event loop:' line")
        elif on_ferroloop != (self.loop == "ferroloop"):
            found.append(f"ran on the wrong loop ({self.loop_line})")
        return found

    def bench(self):
        """{section: seconds} from the micro-benchmark's BENCH lines."""
        timings = {}
        for line in self.lines("BENCH:"):
            name, _, seconds = line[len("BENCH:"):].rpartition(":")
            timings[name.strip()] = float(seconds)
        return timings


@dataclass
class Outcome:
    name: str
    runs: dict = field(default_factory=lambda: {loop: [] for loop in LOOPS})
    problems: list = field(default_factory=list)

    def seconds(self, loop):
        return statistics.median(run.seconds for run in self.runs[loop])

    @property
    def ok(self):
        return not self.problems

    @property
    def stderr(self):
        return any(run.stderr.strip() for runs in self.runs.values() for run in runs)


def run_example(path: Path, loop: str, timeout: float) -> Run:
    command = [sys.executable]
    if loop == "ferroloop":
        command += ["-m", "ferroloop"]
    command.append(str(path))
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=path.parent, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode(errors="replace") if expired.stdout else ""
        err = expired.stderr.decode(errors="replace") if expired.stderr else ""
        return Run(loop, time.perf_counter() - start, None, out, err)
    return Run(loop, time.perf_counter() - start, done.returncode, done.stdout, done.stderr)


def compare(outcome: Outcome):
    """Every run must be fine on its own and print the RESULT lines of the
    first asyncio run."""
    reference = outcome.runs["asyncio"][0]
    problems = []
    for loop in LOOPS:
        for number, run in enumerate(outcome.runs[loop], 1):
            label = loop if len(outcome.runs[loop]) == 1 else f"{loop} (run {number})"
            problems += [f"{label}: {p}" for p in run.problems()]
            if run is not reference and run.results != reference.results:
                diff = difflib.unified_diff(reference.results, run.results, "asyncio",
                                            label, lineterm="", n=0)
                problems.append(f"{label}: RESULT lines differ\n" + "\n".join(diff))
    outcome.problems = problems


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def has_debug_info(path: Path):
    """Whether an ELF file has a .debug_info section (cargo's dev profile
    keeps it, the release profile does not); None if it cannot tell."""
    try:
        data = path.read_bytes()
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # 64-bit little-endian only
            return None
        shoff = int.from_bytes(data[0x28:0x30], "little")
        shentsize = int.from_bytes(data[0x3A:0x3C], "little")
        shnum = int.from_bytes(data[0x3C:0x3E], "little")
        shstrndx = int.from_bytes(data[0x3E:0x40], "little")

        def section(i):
            header = data[shoff + i * shentsize: shoff + (i + 1) * shentsize]
            name = int.from_bytes(header[0:4], "little")
            offset = int.from_bytes(header[0x18:0x20], "little")
            return name, offset

        strtab = section(shstrndx)[1]
        for i in range(shnum):
            name = section(i)[0]
            end = data.index(b"\0", strtab + name)
            if data[strtab + name:end] == b".debug_info":
                return True
        return False
    except (OSError, ValueError, IndexError):
        return None


def describe_environment():
    try:
        import ferroloop
        import ferroloop._core as core
    except ImportError as error:
        sys.exit(f"ferroloop is not importable with {sys.executable}: {error}")
    extension = Path(core.__file__)
    debug = has_debug_info(extension)
    build = {True: "has debug info: likely an unoptimized debug build",
             False: "no debug info: an optimized (release) build",
             None: "build type unknown"}[debug]
    print(f"ferroloop {ferroloop.__version__}  ({extension}; {build})")
    print(f"Python    {platform.python_implementation()} {platform.python_version()}  ({sys.executable})")
    print(f"machine   {platform.system()} {platform.release()} {platform.machine()}, "
          f"{cpu_model()}, {os.cpu_count()} CPUs")
    if hasattr(os, "getloadavg"):
        print(f"load avg  {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) at start")
    if debug:
        print("note: ferroloop timings from a debug build say little about its speed")


def print_table(outcomes, repeat):
    what = "median of %d runs" % repeat if repeat > 1 else "one run each"
    print(f"\nwall-clock time per example ({what}, including interpreter start-up);")
    print("ratio = ferroloop time / asyncio time (below 1.00: ferroloop took less time)\n")
    width = max(len("example"), *(len(o.name) for o in outcomes))
    header = f"{'example':<{width}}  {'asyncio':>9}  {'ferroloop':>9}  {'ratio':>6}  result"
    print(header)
    print("-" * len(header))
    totals = dict.fromkeys(LOOPS, 0.0)
    for outcome in outcomes:
        a, f = outcome.seconds("asyncio"), outcome.seconds("ferroloop")
        totals["asyncio"] += a
        totals["ferroloop"] += f
        verdict = "match" if outcome.ok else "FAIL"
        if outcome.stderr:
            verdict += " (stderr shown above)"
        print(f"{outcome.name:<{width}}  {a:8.2f}s  {f:8.2f}s  {f / a:6.2f}  {verdict}")
    print("-" * len(header))
    a, f = totals["asyncio"], totals["ferroloop"]
    passed = sum(o.ok for o in outcomes)
    print(f"{'total':<{width}}  {a:8.2f}s  {f:8.2f}s  {f / a:6.2f}  {passed}/{len(outcomes)} match")


def print_bench(outcomes):
    for outcome in outcomes:
        per_loop = {loop: [run.bench() for run in outcome.runs[loop]] for loop in LOOPS}
        sections = [name for name in per_loop["asyncio"][0] if
                    all(name in timings for runs in per_loop.values() for timings in runs)]
        if not sections:
            continue
        print(f"\n{outcome.name}: time per section, measured inside the program")
        header = f"{'section':<16}  {'asyncio':>9}  {'ferroloop':>9}  {'ratio':>6}"
        print(header)
        print("-" * len(header))
        for name in sections:
            a = statistics.median(t[name] for t in per_loop["asyncio"])
            f = statistics.median(t[name] for t in per_loop["ferroloop"])
            print(f"{name:<16}  {a:8.3f}s  {f:8.3f}s  {f / a:6.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only examples whose file name contains one of these")
    parser.add_argument("--repeat", type=int, default=1, help="runs per example and loop (median is shown)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a run is killed")
    parser.add_argument("--quiet", action="store_true", help="do not print the examples' output")
    args = parser.parse_args(argv)

    examples = sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))
    if args.names:
        examples = [p for p in examples if any(n in p.name for n in args.names)]
    if not examples:
        sys.exit("no examples selected")

    describe_environment()
    outcomes = []
    for path in examples:
        outcome = Outcome(path.name)
        for i in range(max(1, args.repeat)):
            # Alternate which loop goes first, so neither always runs on a
            # machine the other one has just warmed up (or loaded).
            for loop in (LOOPS if i % 2 == 0 else LOOPS[::-1]):
                outcome.runs[loop].append(run_example(path, loop, args.timeout))
        compare(outcome)
        outcomes.append(outcome)

        shown = outcome.runs["ferroloop"][0]
        if not args.quiet or not outcome.ok:
            print(f"\n=== {path.name}: output on ferroloop "
                  f"({'same RESULT lines as on asyncio' if outcome.ok else 'FAILED'})")
            text = "\n".join(line for line in shown.stdout.splitlines()
                             if not line.startswith("BENCH:"))
            print(indent(text or "(no output)"))
        for problem in outcome.problems:
            print(indent(problem, "  ! "))
        # The examples print nothing to stderr when all is well, so show it
        # whenever there is some (it does not by itself fail the example).
        for loop in LOOPS:
            run = outcome.runs[loop][0]
            if run.stderr.strip():
                print(f"  stderr on {loop} ({path.name}):")
                print(indent(run.stderr[-3000:]))

    print_table(outcomes, max(1, args.repeat))
    print_bench(outcomes)
    failed = [o.name for o in outcomes if not o.ok]
    print()
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print(f"all {len(outcomes)} examples gave the same results on asyncio and ferroloop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
