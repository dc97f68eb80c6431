"""Compares the two sides of a module and renders the results.

Per key, one category:
  pass             passes on both sides
  regression       passes on the baseline, not on the candidate (a skip or a
                   test that never ran counts as not passing)
  flaky            a regression whose rerun passed
  xfail            listed in expected_failures.py and not passing
  unexpected-pass  listed in expected_failures.py but passing
  excluded         listed in exclusions.py (not run on the candidate)
  baseline-fail    did not pass on the baseline: not scored
  baseline-only    extra test of a selector-specific class: not scored
  candidate-only   no baseline counterpart: a failure here is a regression
"""

from dataclasses import dataclass, field

FAILED = ("fail", "error", "timeout", "crash")
SCORED = ("pass", "regression", "flaky", "xfail", "unexpected-pass")
FAILING_STATUSES = ("fatal", "timeout", "crashed", "no-candidate-loops",
                    "fixture-error", "out-of-time")


@dataclass
class Row:
    key: str
    category: str
    baseline: str = None      # outcome
    candidate: str = None     # outcome
    baseline_id: str = None
    candidate_id: str = None
    detail: str = ""
    why: str = ""             # exclusion reason / expected-failure group
    candidate_loops: int = 0

    def as_json(self):
        return dict(vars(self))


@dataclass
class ModuleReport:
    name: str
    status: str = "ok"
    notes: list = field(default_factory=list)
    baseline: object = None   # supervise.SideRun
    candidate: object = None
    rows: dict = field(default_factory=dict)

    def count(self, *categories):
        return sum(1 for r in self.rows.values() if r.category in categories)

    @property
    def counts(self):
        rows = self.rows.values()
        scored = [r for r in rows if r.baseline == "pass" and r.category in SCORED]
        cand_run = [t for t in (self.candidate.tests.values() if self.candidate else ())
                    if t.outcome != "not-run"]
        return dict(
            baseline_pass=sum(1 for r in rows
                              if r.baseline == "pass" and r.category != "baseline-only"),
            scored=len(scored),
            candidate_pass=sum(1 for r in scored if r.candidate == "pass"),
            candidate_pass_on_loop=sum(1 for r in scored
                                       if r.candidate == "pass" and r.candidate_loops),
            regressions=self.count("regression"),
            flaky=self.count("flaky"),
            excluded=self.count("excluded"),
            xfail=self.count("xfail"),
            unexpected_passes=self.count("unexpected-pass"),
            baseline_fail=self.count("baseline-fail"),
            candidate_run=len(cand_run),
            # Tests that made at least one candidate loop: the rest passed or
            # failed without the candidate ever running them.
            on_candidate=sum(1 for t in cand_run if (t.loops or {}).get("candidate")),
        )

    @property
    def display_status(self):
        if self.status == "ok" and self.failing:
            return "FAIL"
        return self.status

    @property
    def failing(self):
        return (self.status in FAILING_STATUSES or self.count("regression")
                or self.count("unexpected-pass"))


def compare(report, expectations):
    base = {t.key: t for t in report.baseline.tests.values()}
    cand = {t.key: t for t in report.candidate.tests.values()}
    for key in list(base) + [k for k in cand if k not in base]:
        b, c = base.get(key), cand.get(key)
        row = Row(key, "", b.outcome if b else None, c.outcome if c else None,
                  b.id if b else None, c.id if c else None)
        if c is not None:
            row.detail = c.detail
            row.candidate_loops = (c.loops or {}).get("candidate", 0)
        report.rows[key] = row
        if b is not None and not b.comparable:
            row.category = "baseline-only"
            continue
        reason = expectations.excluded(key)
        if reason is not None:
            row.category, row.why = "excluded", reason
            continue
        expected = expectations.expected_failure(key)
        passed = c is not None and c.outcome == "pass"
        if expected is not None:
            row.category = "unexpected-pass" if passed else "xfail"
            row.why = f"{expected[0]}: {expected[1]}"
        elif b is None:
            row.category = "regression" if c.outcome in FAILED else "candidate-only"
        elif b.outcome != "pass":
            row.category = "baseline-fail"
        else:
            row.category = "pass" if passed else "regression"


def rerun_candidates(report, limit):
    """Regressions worth a second run: plain failures, when there are few.

    Timeouts and crashes are not retried (they would cost a full timeout each
    and are rarely flukes); many failures at once mean breakage, not flakes.
    """
    ids = [r.candidate_id for r in report.rows.values()
           if r.category == "regression" and r.candidate in ("fail", "error")]
    return ids if 0 < len(ids) <= limit else []


def apply_rerun(report, rerun):
    passed = {t.id for t in rerun.tests.values() if t.outcome == "pass"}
    for row in report.rows.values():
        if row.category == "regression" and row.candidate_id in passed:
            row.category = "flaky"


def module_status(report, spec, filtered, version):
    b, c = report.baseline, report.candidate
    statuses = {b.status, c.status}
    for bad in ("fatal", "timeout", "crashed"):
        if bad in statuses:
            return bad
    if statuses == {"skipped"}:
        return "skipped"
    if "skipped" in statuses:
        report.notes.append("skipped on one side only")
        return "fatal"
    new_fixture_errors = {f["id"] for f in c.fixtures} - {f["id"] for f in b.fixtures}
    if new_fixture_errors:
        return "fixture-error"
    # Loops are counted for tests that finished; a crash or hang loses them.
    ran = any(t.loops is not None for t in c.tests.values())
    since = spec.candidate_loops_since
    if ran and c.loops_total("candidate") == 0 and not (since and version >= since):
        report.notes.append("no test ran on a candidate loop, as expected here"
                            + (f" ({spec.note})" if spec.note else ""))
    elif ran and c.loops_total("candidate") == 0:
        if filtered:
            report.notes.append("the selected tests created no candidate loop")
        else:
            report.notes.append("no test created a candidate loop: is the candidate "
                                "policy really in place?")
            return "no-candidate-loops"
    return "ok"


# ---------------------------------------------------------------- rendering

_COLUMNS = (("module", 22), ("base", 6), ("cand", 6), ("regr", 5), ("flaky", 6),
            ("excl", 5), ("xfail", 6), ("uxpass", 7), ("on-cand", 11),
            ("base s", 8), ("cand s", 8), ("status", 0))


def _line(values):
    out = []
    for (name, width), v in zip(_COLUMNS, values):
        text = str(v)
        out.append(text.ljust(width) if name == "module" else text.rjust(width) if width else " " + text)
    return " ".join(out).rstrip()


def table(reports):
    lines = [_line(name for name, _ in _COLUMNS)]
    totals = dict.fromkeys(("baseline_pass", "scored", "candidate_pass",
                            "candidate_pass_on_loop", "regressions",
                            "flaky", "excluded", "xfail", "unexpected_passes",
                            "baseline_fail", "on_candidate", "candidate_run"), 0)
    tb = tc = 0.0
    for r in reports:
        if r.baseline is None:
            lines.append(_line([r.name] + [""] * 10 + [r.status]))
            continue
        k = r.counts
        for name in totals:
            totals[name] += k[name]
        tb += r.baseline.duration
        tc += r.candidate.duration
        lines.append(_line([
            r.name, k["baseline_pass"], k["candidate_pass"], k["regressions"], k["flaky"],
            k["excluded"], k["xfail"], k["unexpected_passes"],
            f"{k['on_candidate']}/{k['candidate_run']}",
            f"{r.baseline.duration:.1f}", f"{r.candidate.duration:.1f}", r.display_status]))
    t = totals
    lines.append(_line(["TOTAL", t["baseline_pass"], t["candidate_pass"], t["regressions"],
                        t["flaky"], t["excluded"], t["xfail"], t["unexpected_passes"],
                        f"{t['on_candidate']}/{t['candidate_run']}",
                        f"{tb:.1f}", f"{tc:.1f}", ""]))
    scored = t["scored"]
    pct = 100.0 * t["candidate_pass"] / scored if scored else 100.0
    lines.append(f"score: {t['candidate_pass']}/{scored} of the tests passing on the baseline "
                 f"pass on the candidate ({pct:.1f}%); excluded tests are not scored")
    lines.append(f"       {t['candidate_pass_on_loop']} of those passes ran on a candidate loop; "
                 f"the rest used stdlib fixture loops or no loop")
    return "\n".join(lines), dict(totals, score_percent=round(pct, 2),
                                  baseline_seconds=round(tb, 1),
                                  candidate_seconds=round(tc, 1))

def _main_stack_first(lines):
    """Reorder a faulthandler dump so the interesting thread comes first.

    That is the thread that crashed ("Current thread"), or else the main
    thread, which faulthandler lists last (threads go newest to oldest).
    """
    head, blocks = [], []
    for line in lines:
        if line.startswith(("Thread 0x", "Current thread 0x")):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
        else:
            head.append(line)
    if len(blocks) < 2:
        return lines
    current = [b for b in blocks if b[0].startswith("Current thread")]
    first = current[0] if current else blocks[-1]
    return head + first + [line for b in blocks if b is not first for line in b]


def excerpt(detail, outcome, n):
    lines = (detail or "").rstrip().splitlines()
    if outcome in ("timeout", "crash"):
        lines = _main_stack_first(lines)
    if len(lines) <= n:
        return lines
    if outcome in ("timeout", "crash"):
        # faulthandler prints the innermost frame first.
        return lines[:n] + ["..."]
    # Python tracebacks end with the exception; keep the start for context.
    return lines[:2] + ["..."] + lines[-(n - 2):]


def details(reports, tb_lines, verbose=False):
    out = []
    sections = [("REGRESSIONS (passed on baseline, not on candidate)", ("regression",)),
                ("UNEXPECTED PASSES (remove them from expected_failures.py)", ("unexpected-pass",)),
                ("FLAKY (failed, then passed on rerun)", ("flaky",))]
    if verbose:
        sections.append(("EXPECTED FAILURES", ("xfail",)))
    for title, cats in sections:
        rows = [(r, row) for r in reports for row in r.rows.values() if row.category in cats]
        if not rows:
            continue
        out.append(f"\n{title}: {len(rows)}")
        for _, row in rows:
            why = f" [{row.why}]" if row.why else ""
            out.append(f"  {row.key}: {row.candidate or 'not run'}{why}")
            if row.category in ("regression", "flaky") or verbose:
                for line in excerpt(row.detail, row.candidate, tb_lines):
                    out.append("      " + line)
    problems = [(r, p) for r in reports for side in (r.baseline, r.candidate) if side
                for p in side.problems]
    notes = [(r, n) for r in reports for n in r.notes]
    if problems or notes:
        out.append("\nMODULE PROBLEMS AND NOTES:")
        for r, p in problems + notes:
            out.append(f"  {r.name}: {p}")
        for r in reports:
            for side in (r.baseline, r.candidate):
                for fx in side.fixtures if side else ():
                    out.append(f"  {r.name} [{side.side}] {fx['id']}:")
                    out.extend("      " + line for line in excerpt(fx["detail"], "crash", tb_lines))
    return "\n".join(out)


def as_json(reports, totals, meta, unused_patterns):
    modules = {}
    for r in reports:
        entry = dict(status=r.status, notes=r.notes)
        if r.baseline is not None:
            entry["counts"] = r.counts
            for side in (r.baseline, r.candidate):
                entry[side.side] = dict(
                    status=side.status, note=side.note, duration=side.duration,
                    attempts=side.attempts, problems=side.problems, fixtures=side.fixtures,
                    loop_type=side.loop_type,
                    loops={k: side.loops_total(k) for k in ("candidate", "stdlib", "foreign")},
                    policy_leaks=[t.id for t in side.tests.values() if t.policy_leak])
            entry["tests"] = {k: row.as_json() for k, row in r.rows.items()}
        modules[r.name] = entry
    return dict(meta, totals=totals, modules=modules,
                unused_expectation_patterns=unused_patterns)
