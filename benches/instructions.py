"""Instructions per operation of the deterministic micro-benchmarks, for every loop.

    python benches/instructions.py [--loops asyncio,uvloop,rloop,rsloop,ferroloop]
        [--only call_soon,call_later,tasks,futures,udp_echo,sock_echo,stream_echo,
                protocol_echo,tls_echo] [--scale 0.1] [--timeout 180]

Wall-clock figures on a shared virtual machine swing with the host: the
same run can be twice as fast a minute later (see run.py's speed probe).
The number of instructions a benchmark executes does not, so this script
complements run.py's timings with a figure that holds on any machine:
each micro-benchmark runs under valgrind's callgrind twice per loop, once
with its measured run and once with the warm-up only; the difference,
divided by the operations of the measured run, is what one operation
costs. Fewer instructions is not the same as faster (cache misses and
branch mispredictions are not counted), so treat it as a guide to where
the work goes, not as the score. Only single-threaded benchmarks whose
work is fixed are counted (not the ones with threads or real-time sleeps).

Needs valgrind on PATH. A loop that does not finish within --timeout
under valgrind (rsloop's runtime, for one, spins) shows "n/a".
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import micro  # noqa: E402  (the benchmarks themselves, and their amounts of work)

DEFAULT_LOOPS = "asyncio,uvloop,rloop,rsloop,ferroloop"
DETERMINISTIC = ("call_soon", "call_later", "tasks", "futures", "udp_echo", "sock_echo",
                 "stream_echo", "protocol_echo", "tls_echo")
COLLECTED = re.compile(r"Collected\s*:\s*([\d,]+)")


def operations(name):
    """How many operations the measured run of ``name`` does (after
    ``micro.scale_work``)."""
    return {
        "call_soon": micro.CALL_SOON,
        "call_later": micro.TIMERS,
        "tasks": micro.TASKS * micro.YIELDS,
        "futures": micro.FUTURES,
        "udp_echo": micro.UDP_ROUNDS,
        "sock_echo": micro.ECHO_ROUNDS,
        "stream_echo": micro.ECHO_ROUNDS,
        "protocol_echo": micro.ECHO_ROUNDS,
        "tls_echo": micro.TLS_ROUNDS,
    }[name]


def instructions(loop, name, scale, warm_up_only, timeout):
    """Instructions the whole process executed, or None if it failed."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, str(HERE / "micro.py"), "--loop", loop, "--only", name,
           "--scale", str(scale)]
    if warm_up_only:
        cmd.append("--warm-up-only")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    match = COLLECTED.search(done.stderr)
    if done.returncode != 0 or match is None:
        return None
    return int(match.group(1).replace(",", ""))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loops", default=DEFAULT_LOOPS)
    p.add_argument("--only", default=",".join(DETERMINISTIC))
    p.add_argument("--scale", type=float, default=0.1,
                   help="work per benchmark, as a fraction of micro.py's (valgrind is slow)")
    p.add_argument("--timeout", type=float, default=180, help="seconds per valgrind process")
    args = p.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    names = args.only.split(",")
    unknown = set(names) - set(DETERMINISTIC)
    if unknown:
        sys.exit(f"not deterministic enough to count: {', '.join(sorted(unknown))}")
    loops = args.loops.split(",")
    micro.scale_work(args.scale)

    table = {}
    for name in names:
        for loop in loops:
            full = instructions(loop, name, args.scale, False, args.timeout)
            warm = instructions(loop, name, args.scale, True, args.timeout) if full else None
            table[name, loop] = None if warm is None else (full - warm) / operations(name)
            shown = "n/a" if table[name, loop] is None else f"{table[name, loop]:,.0f}"
            print(f"  {name:<12} {loop:<10} {shown}", file=sys.stderr, flush=True)

    print(f"Instructions per operation (callgrind, --scale {args.scale}); "
          "in brackets, as a share of the fewest among the other loops.\n")
    print("| benchmark | " + " | ".join(loops) + " |")
    print("|---" * (len(loops) + 1) + "|")
    for name in names:
        cells = []
        for loop in loops:
            mine = table[name, loop]
            others = [table[name, o] for o in loops if o != loop and table[name, o]]
            if mine is None:
                cells.append("n/a")
            elif others:
                cells.append(f"{mine:,.0f} ({mine / min(others):.2f})")
            else:
                cells.append(f"{mine:,.0f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
