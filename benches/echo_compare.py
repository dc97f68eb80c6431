"""Echo throughput of several event loops, measured side by side in one run.

    python benches/echo_compare.py [--loops asyncio,uvloop,ferroloop]
        [--styles protocol] [--sizes 1024] [--conns 10] [--seconds 5] [--reps 5]

Each server (benches/echo_server.py) runs pinned to CPU 0 and the native load
client (benches/loadgen) to CPU 1.  Loops take turns round-robin within each
repetition, so a slow moment of the machine hits them all alike; each figure
is the median of the repetitions with its spread (min-max).  The first row is
the single-threaded pure-Rust echo server: the ceiling the client can drive.
Prints a markdown table of messages per second and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "target" / "loadgen" / "release" / "loadgen"
SERVER = ROOT / "benches" / "echo_server.py"
CEILING = "rust-ceiling"


def pinned(cpu, argv):
    return ["taskset", "-c", str(cpu), *argv] if os.cpu_count() > 1 else argv


def start_server(loop, style):
    if loop == CEILING:
        argv = [str(LOADGEN), "server", "--addr", "127.0.0.1:0"]
    else:
        argv = [sys.executable, str(SERVER), "--loop", loop, "--style", style, "--port", "0"]
    proc = subprocess.Popen(pinned(0, argv), stdout=subprocess.PIPE, text=True)
    addr = proc.stdout.readline().strip()
    if not addr:
        proc.kill()
        raise RuntimeError(f"{loop} server did not start")
    return proc, addr


def measure(loop, style, size, conns, seconds):
    proc, addr = start_server(loop, style)
    try:
        # A short warm-up run, not counted.
        subprocess.run(pinned(1, [str(LOADGEN), "echo", "--addr", addr, "--conns", str(conns),
                                  "--size", str(size), "--seconds", "0.5"]),
                       check=True, capture_output=True)  # fmt: skip
        out = subprocess.run(pinned(1, [str(LOADGEN), "echo", "--addr", addr, "--conns",
                                        str(conns), "--size", str(size), "--seconds",
                                        str(seconds)]),
                             check=True, capture_output=True, text=True)  # fmt: skip
        return json.loads(out.stdout)["msgs_per_sec"]
    finally:
        proc.kill()
        proc.wait()


def load_average():
    return os.getloadavg()[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loops", default="asyncio,uvloop,ferroloop")
    p.add_argument("--styles", default="protocol")
    p.add_argument("--sizes", default="1024")
    p.add_argument("--conns", default="10")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    if not LOADGEN.exists():
        sys.exit(f"build the load client first: (cd benches/loadgen && "
                 f"CARGO_TARGET_DIR={ROOT}/target/loadgen cargo build --release)")
    loops = [CEILING] + args.loops.split(",")
    cases = [(style, int(size), int(conns)) for style in args.styles.split(",")
             for size in args.sizes.split(",") for conns in args.conns.split(",")]
    before = load_average()
    results = {}
    for rep in range(args.reps):
        for case in cases:
            for loop in loops:
                results.setdefault((case, loop), []).append(measure(loop, *case, args.seconds))
        print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    print(f"\nload average before: {before:.2f}; python {sys.version.split()[0]}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| style | size | conns | loop | msg/s (median) | spread | vs asyncio | share of ceiling |")
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        ceiling = statistics.median(results[(case, CEILING)])
        base = statistics.median(results[(case, "asyncio")]) if "asyncio" in loops else None
        for loop in loops:
            runs = results[(case, loop)]
            med = statistics.median(runs)
            ratio = f"{med / base:.2f}x" if base else "-"
            print(f"| {case[0]} | {case[1]} | {case[2]} | {loop} | {med:,.0f} | "
                  f"{min(runs):,.0f}-{max(runs):,.0f} | {ratio} | {med / ceiling:.0%} |")


if __name__ == "__main__":
    main()
