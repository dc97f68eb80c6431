"""The benchmark suite: every loop side by side, in one run.

    python benches/run.py [--loops asyncio,uvloop,rloop,ferroloop] [--reps 5]
        [--seconds 1.5] [--sections micro,echo,http[,udp]] [--quick] [--force]
        [--out benches/results]

Method:
* Loops take turns round-robin inside every repetition, so a slow moment of
  the machine is shared; each figure is the median of the repetitions, shown
  with its spread (min-max).  Each measurement is preceded by a warm-up.
* Servers run pinned to CPU 0 and the native load client (benches/loadgen)
  to CPU 1; in-process micro-benchmarks run pinned to CPU 0.
* The machine must be idle: CPU use by anything else is sampled before the
  run (it refuses to start above 15% unless --force) and between
  repetitions; a run that saw a busy moment is flagged "NOISY" in the output.
* The CPUs must keep their speed: a fixed piece of pure-Python work is timed
  on each CPU before the run and after every repetition.  A virtual machine
  whose host is busy looks idle from inside yet runs everything slower; a
  run whose probe varied by more than 10% is flagged "NOISY" as well.
  The probe misses swings within a repetition, so a run whose rows'
  repetitions are far apart (median spread above 15% over the micro rows,
  or 35% over all rows when there are none) is flagged too.
* The ceiling row is a single-threaded pure-Rust echo server under the same
  client: what the client and kernel allow at all.

Writes <out>/latest.md (the table) and <out>/latest.svg (the chart), and
prints the table.  A loop that cannot run a benchmark (a missing feature)
shows "n/a".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import chart  # noqa: E402

LOADGEN = ROOT / "target" / "loadgen" / "release" / "loadgen"
CEILING = "rust-ceiling"
MICRO = ["call_soon", "call_later", "tasks", "futures", "call_soon_threadsafe",
         "run_in_executor", "gather_sleeps", "tls_echo"]  # fmt: skip
ECHO_STYLES = ["sock", "streams", "protocol", "buffered"]
ECHO_SIZES = [1024, 10240, 102400]
ECHO_CONNS = [10, 100]
HTTP_STYLES = ["protocol", "aiohttp", "uvicorn"]
UDP_SIZE, UDP_CONNS = 100, [1, 10, 100]
BUSY_LIMIT = 0.15
SPEED_SPREAD_LIMIT = 0.10
# Median spread (max/min - 1) of a row's repetitions, over every loop and
# row: the in-process micro rows repeat within 5% on a steady machine (07:06
# UTC run of 2026-12-01), the echo rows within about 20-30%. A run on a host
# whose speed swung within repetitions showed 67% and 45% while the speed
# probe, taken between repetitions, saw 8%.
ROW_SPREAD_LIMITS = {"micro": 0.15, "all": 0.35}


def pinned(cpu, argv):
    return ["taskset", "-c", str(cpu), *argv] if (os.cpu_count() or 1) > 1 else argv


def cpu_busy_fraction(window=1.0):
    """Share of all CPUs busy during `window` seconds (nothing of ours runs)."""

    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(window)
    total1, idle1 = sample()
    total = total1 - total0
    return 0.0 if total <= 0 else 1.0 - (idle1 - idle0) / total


def cpu_speed():
    """Fixed pure-Python work per second on the slowest CPU, best of 5
    tries per CPU (each about 20 ms): how fast this machine runs right now."""
    cpus = sorted(os.sched_getaffinity(0))
    per_cpu = []
    try:
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                total = 0
                for i in range(200_000):
                    total += i & 7
                best = min(best, time.perf_counter() - t0)
            per_cpu.append(1.0 / best)
    finally:
        os.sched_setaffinity(0, cpus)
    return min(per_cpu)


def speed_spread(speeds):
    """How far apart the slowest and fastest CPU probes were (0.25: 25%)."""
    return max(speeds) / min(speeds) - 1.0


def row_spread(rows):
    """(which rows, median spread): how far apart a row's repetitions were
    (max/min - 1), the median over every loop's figures in the micro rows,
    or in all rows when the run has no micro row; None without figures."""
    spreads = {"micro": [], "all": []}
    for case, stats in rows:
        for s in stats.values():
            if s is not None and s[1] > 0:
                spreads["all"].append(s[2] / s[1] - 1.0)
                if case.section == "micro":
                    spreads["micro"].append(s[2] / s[1] - 1.0)
    which = "micro" if spreads["micro"] else "all"
    return which, (statistics.median(spreads[which]) if spreads[which] else None)


# ---- one measurement each ---------------------------------------------------


class Case:
    """One row of the table: how to measure it for a given loop."""

    def __init__(self, section, name, unit, measure, *, ceiling=False):
        self.section, self.name, self.unit = section, name, unit
        self.measure = measure
        self.ceiling = ceiling


def micro_case(name):
    def measure(loop, seconds):
        out = subprocess.run(
            pinned(0, [sys.executable, str(HERE / "micro.py"), "--loop", loop, "--only", name,
                       "--json"]),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)[name]

    return Case("micro", name, "ops/s", measure)


def start_server(argv):
    proc = subprocess.Popen(pinned(0, argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    addr = proc.stdout.readline().strip()
    if not addr:
        proc.kill()
        proc.wait()
        return None, None
    return proc, addr


def run_client(args, seconds, key):
    """The client's figure, or None when the server does not serve (a
    loop lacking a feature answers nothing, or errors)."""
    try:
        warm = subprocess.run(pinned(1, [str(LOADGEN), *args, "--seconds", "0.3"]),
                              capture_output=True, text=True, timeout=15)  # fmt: skip
        if warm.returncode != 0:
            return None
        out = subprocess.run(pinned(1, [str(LOADGEN), *args, "--seconds", str(seconds)]),
                             capture_output=True, text=True, timeout=seconds + 15)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)[key]


def serve_and_measure(server_argv, client_args, seconds, key):
    """Starts the server, runs the load client against the address it
    prints, and stops the server; the client's figure ``key``, or None."""
    proc, addr = start_server(server_argv)
    if proc is None:
        return None
    try:
        return run_client([client_args[0], "--addr", addr, *client_args[1:]], seconds, key)
    finally:
        proc.kill()
        proc.wait()


def echo_server_argv(loop, style):
    return [sys.executable, str(HERE / "echo_server.py"), "--loop", loop, "--style", style,
            "--port", "0"]  # fmt: skip


def echo_case(style, size, conns):
    def measure(loop, seconds):
        if loop == CEILING:
            argv = [str(LOADGEN), "server", "--addr", "127.0.0.1:0"]
        else:
            argv = echo_server_argv(loop, style)
        return serve_and_measure(argv, ["echo", "--conns", str(conns), "--size", str(size)],
                                 seconds, "msgs_per_sec")  # fmt: skip

    label = f"{style} {size // 1024} KiB x{conns}"
    return Case("echo", label, "msg/s", measure, ceiling=True)


def udp_case(size, conns):
    """UDP echo (a DatagramProtocol) under `loadgen udp`: not among the
    rows the default run measures, whose list is issue 6's; asked for with
    --sections udp."""

    def measure(loop, seconds):
        return serve_and_measure(echo_server_argv(loop, "datagram"),
                                 ["udp", "--conns", str(conns), "--size", str(size)],
                                 seconds, "msgs_per_sec")  # fmt: skip

    return Case("udp", f"datagram {size} B x{conns}", "msg/s", measure)


def http_case(style, conns=50):
    def measure(loop, seconds):
        argv = [sys.executable, str(HERE / "http_server.py"), "--loop", loop, "--style", style]
        return serve_and_measure(argv, ["http", "--conns", str(conns)], seconds,
                                 "requests_per_sec")  # fmt: skip

    return Case("http", f"{style} x{conns}", "req/s", measure)


def build_cases(sections, quick):
    cases = []
    if "micro" in sections:
        cases += [micro_case(name) for name in MICRO]
    if "echo" in sections:
        sizes = [1024] if quick else ECHO_SIZES
        conns = [10] if quick else ECHO_CONNS
        cases += [echo_case(s, n, c) for s in ECHO_STYLES for n in sizes for c in conns]
    if "http" in sections:
        cases += [http_case(style) for style in HTTP_STYLES]
    if "udp" in sections:
        cases += [udp_case(UDP_SIZE, c) for c in ([10] if quick else UDP_CONNS)]
    return cases


# ---- reporting ----------------------------------------------------------------


def summarize(cases, loops, results):
    """Rows of (case, {loop: (median, lo, hi) or None}, ceiling median)."""
    rows = []
    for case in cases:
        stats = {}
        for loop in loops + [CEILING]:
            runs = [r for r in results.get((case.name, loop), []) if r is not None]
            stats[loop] = (statistics.median(runs), min(runs), max(runs)) if runs else None
        rows.append((case, stats))
    return rows


def fmt(value):
    return f"{value:,.0f}"


def markdown(rows, loops, header):
    peers = [loop for loop in loops if loop != "ferroloop"]
    lines = [header, "",
             "| section | benchmark | unit | " + " | ".join(loops)
             + " | ferroloop / best peer | ferroloop / uvloop | ferroloop share of ceiling |",
             "|---|---|---|" + "---|" * len(loops) + "---|---|---|"]  # fmt: skip
    for case, stats in rows:
        cells = []
        for loop in loops:
            s = stats[loop]
            cells.append("n/a" if s is None else f"{fmt(s[0])} ({fmt(s[1])}-{fmt(s[2])})")
        ours = stats.get("ferroloop")
        best = max((stats[p][0] for p in peers if stats.get(p)), default=None)
        uv = stats.get("uvloop")
        ceiling = stats.get(CEILING)
        vs_best = f"{ours[0] / best:.2f}x" if ours and best else "-"
        vs_uv = f"{ours[0] / uv[0]:.2f}x" if ours and uv else "-"
        share = f"{ours[0] / ceiling[0]:.0%}" if ours and ceiling and case.ceiling else "-"
        lines.append(f"| {case.section} | {case.name} | {case.unit} | " + " | ".join(cells)
                     + f" | {vs_best} | {vs_uv} | {share} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loops", default="asyncio,uvloop,rloop,ferroloop")
    p.add_argument("--sections", default="micro,echo,http")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--quick", action="store_true", help="1 KiB x10 echo rows only")
    p.add_argument("--force", action="store_true", help="run even if the machine is busy")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()
    if not LOADGEN.exists():
        sys.exit("build the load client first: scripts/bench.sh does it")
    loops = args.loops.split(",")
    cases = build_cases(args.sections.split(","), args.quick)

    busy = cpu_busy_fraction()
    if busy > BUSY_LIMIT and not args.force:
        sys.exit(f"the machine is busy ({busy:.0%} CPU used by others): refusing to measure; "
                 "--force to measure anyway")  # fmt: skip
    busy_samples = [busy]
    speeds = [cpu_speed()]
    results = {}
    started = time.time()
    for rep in range(args.reps):
        for case in cases:
            for loop in loops + ([CEILING] if case.ceiling else []):
                results.setdefault((case.name, loop), []).append(case.measure(loop, args.seconds))
        busy_samples.append(cpu_busy_fraction(0.5))
        speeds.append(cpu_speed())
        print(f"repetition {rep + 1}/{args.reps} done ({time.time() - started:.0f} s)",
              file=sys.stderr)  # fmt: skip

    spread = speed_spread(speeds)
    rows = summarize(cases, loops, results)
    which, within = row_spread(rows)
    why = []
    if max(busy_samples) > BUSY_LIMIT:
        why.append("another process used the CPU")
    if spread > SPEED_SPREAD_LIMIT:
        why.append(f"the CPUs' speed varied by {spread:.0%}")
    if within is not None and within > ROW_SPREAD_LIMITS[which]:
        why.append(f"the {which} rows' repetitions varied by a median of {within:.0%}")
    header = (
        f"{'NOISY RUN (' + '; '.join(why) + '): ' if why else ''}"
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"CPython {platform.python_version()}; median of {args.reps} "
        f"(min-max); others' CPU use between repetitions: max {max(busy_samples):.0%}; "
        f"CPU speed probe across the run: {spread:.0%} apart; "
        f"median spread of the {which} rows: "
        f"{'-' if within is None else format(within, '.0%')}.\n\n"
        f"Command: `python benches/run.py {' '.join(sys.argv[1:])}`"
    )
    table = markdown(rows, loops, header)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(table)
    (out / "latest.json").write_text(json.dumps(
        {"header": header, "loops": loops, "cpu_speed_probes": speeds,
         "rows": [{"section": c.section, "name": c.name, "unit": c.unit, "stats": s}
                  for c, s in rows]}, indent=1))  # fmt: skip
    (out / "latest.svg").write_text(chart.render(rows, loops, header.splitlines()[0]))
    print(table)


if __name__ == "__main__":
    main()
