"""``python -m ferroloop ps PID`` and ``pstree PID``: the tasks of a
running ferroloop program, asked through its inspection channel."""

from __future__ import annotations

from ._inspect_server import request


def _age(task):
    return "?" if task["age"] is None else f"{task['age']:.1f}s"


def format_ps(snapshot):
    lines = []
    for loop in snapshot["loops"]:
        lines.append(f"{loop['loop']} (pid {snapshot['pid']}, {len(loop['tasks'])} tasks)")
        rows = [("NAME", "STATE", "AGE", "COROUTINE", "SUSPENDED AT", "AWAITING")]
        for t in loop["tasks"]:
            rows.append((t["name"], t["state"], _age(t), t["coro"], t["where"] or "-",
                         t["awaiting"] or "-"))  # fmt: skip
        widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
        for row in rows:
            lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths))
                         + "  " + str(row[5]))  # fmt: skip
    return "\n".join(lines)


def format_pstree(snapshot):
    lines = []
    for loop in snapshot["loops"]:
        tasks = {t["id"]: t for t in loop["tasks"]}
        awaited = {child for t in loop["tasks"] for child in t["awaits_tasks"]}
        lines.append(f"{loop['loop']} (pid {snapshot['pid']})")

        def walk(task, prefix, last, seen):
            branch = "└── " if last else "├── "
            where = f" at {task['where']}" if task["where"] else ""
            lines.append(f"{prefix}{branch}{task['name']} [{task['coro']}]{where} ({_age(task)})")
            children = [tasks[c] for c in task["awaits_tasks"] if c in tasks and c not in seen]
            for i, child in enumerate(children):
                walk(child, prefix + ("    " if last else "│   "), i == len(children) - 1,
                     seen | {child["id"]})  # fmt: skip

        roots = [t for t in loop["tasks"] if t["id"] not in awaited]
        for i, root in enumerate(roots):
            walk(root, "", i == len(roots) - 1, {root["id"]})
    return "\n".join(lines)


def main(command, pid):
    snapshot = request(pid)
    print(format_ps(snapshot) if command == "ps" else format_pstree(snapshot))
    return 0
