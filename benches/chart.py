"""An SVG chart of the benchmark table, with no plotting dependency.

One group of horizontal bars per benchmark, one bar per loop, each bar's
length relative to the fastest loop of that row (rows have different
units); the figure itself is written at the end of the bar.
"""

from __future__ import annotations

from html import escape

COLORS = {
    "ferroloop": "#d9480f",
    "uvloop": "#1c7ed6",
    "rloop": "#37b24d",
    "rsloop": "#7048e8",
    "asyncio": "#868e96",
    "rust-ceiling": "#343a40",
}
BAR, GAP, LABEL_W, BAR_W, TOP = 11, 10, 230, 520, 60


def _short(value):
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.2f}{suffix}"
    return f"{value:.0f}"


def render(rows, loops, title):
    series = list(loops)
    if any(case.ceiling for case, _ in rows):
        series.append("rust-ceiling")
    height = TOP + sum(len(series) * BAR + GAP for _ in rows) + 20
    width = LABEL_W + BAR_W + 120
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']  # fmt: skip
    x = 10
    for loop in series:
        out.append(f'<rect x="{x}" y="30" width="12" height="12" fill="{COLORS.get(loop, "#999")}"/>')
        out.append(f'<text x="{x + 16}" y="40">{escape(loop)}</text>')
        x += 20 + 7 * len(loop) + 20
    y = TOP
    for case, stats in rows:
        present = [(loop, stats.get(loop)) for loop in series if stats.get(loop)]
        best = max((s[0] for _, s in present), default=0)
        group_h = len(series) * BAR
        out.append(f'<text x="{LABEL_W - 8}" y="{y + group_h / 2 + 4}" text-anchor="end">'
                   f'{escape(case.section + ": " + case.name)} ({escape(case.unit)})</text>')  # fmt: skip
        for i, loop in enumerate(series):
            s = stats.get(loop)
            top = y + i * BAR
            if not s or best <= 0:
                if loop != "rust-ceiling" or case.ceiling:
                    out.append(f'<text x="{LABEL_W + 4}" y="{top + BAR - 2}" fill="#999">n/a</text>')
                continue
            length = BAR_W * s[0] / best
            out.append(f'<rect x="{LABEL_W}" y="{top}" width="{length:.1f}" height="{BAR - 2}" '
                       f'fill="{COLORS.get(loop, "#999")}"/>')  # fmt: skip
            out.append(f'<text x="{LABEL_W + length + 4:.1f}" y="{top + BAR - 2}">'
                       f'{_short(s[0])}</text>')  # fmt: skip
        y += group_h + GAP
    out.append("</svg>")
    return "\n".join(out) + "\n"
