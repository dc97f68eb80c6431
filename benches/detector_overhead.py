"""What the blocking detector costs: ferroloop with and without
FERROLOOP_SLOW_CALLBACK, alternating, on the task and echo rows.

    python benches/detector_overhead.py [--reps 5] [--seconds 1.5]

Prints the median of each and the overhead in percent (positive: slower
with the detector on).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402

CASES = [
    run.micro_case("tasks"),
    run.micro_case("call_soon"),
    run.echo_case("protocol", 1024, 10),
    run.echo_case("streams", 1024, 10),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--threshold", default="0.1")
    args = p.parse_args()
    results = {}
    for rep in range(args.reps):
        for case in CASES:
            for detector in (False, True):
                if detector:
                    os.environ["FERROLOOP_SLOW_CALLBACK"] = args.threshold
                else:
                    os.environ.pop("FERROLOOP_SLOW_CALLBACK", None)
                value = case.measure("ferroloop", args.seconds)
                results.setdefault((case.name, detector), []).append(value)
        print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    os.environ.pop("FERROLOOP_SLOW_CALLBACK", None)
    print(f"| benchmark | off (median) | on, threshold {args.threshold} s (median) | overhead |")
    print("|---|---|---|---|")
    for case in CASES:
        off = statistics.median(results[(case.name, False)])
        on = statistics.median(results[(case.name, True)])
        print(f"| {case.section}: {case.name} | {off:,.0f} {case.unit} | {on:,.0f} {case.unit} | "
              f"{(off - on) / off:+.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
