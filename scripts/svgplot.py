# Copyright 2026 The ft-cloud-hypervisor authors.
# SPDX-License-Identifier: Apache-2.0
"""Line plots as standalone SVG, standard library only (for scripts/bench-ft).

``line_plot(path, title, xlabel, ylabel, series, vlines=(), bands=())``
draws each series (name, [(x, y), ...]) as a polyline on linear axes with
ticks at round values, a legend, optional vertical marker lines
(x, label) and shaded x ranges (x0, x1, label).
"""
import html
import math

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
          "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
W, H = 800, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 55


def _ticks(lo, hi, n=6):
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(first, max(last, first + 1) + 1)]


def _fmt(v):
    return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"


def line_plot(path, title, xlabel, ylabel, series, vlines=(), bands=(), ymin=0.0):
    """Writes the plot to ``path``."""
    xs = [x for _, pts in series for x, _ in pts] + [v for v, _ in vlines]
    ys = [y for _, pts in series for _, y in pts]
    if not xs:
        xs = [0.0, 1.0]
    if not ys:
        ys = [0.0, 1.0]
    xt = _ticks(min(xs), max(xs))
    yt = _ticks(min(min(ys), ymin) if ymin is not None else min(ys), max(ys) * 1.05 or 1.0)
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x):
        return LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return TOP + ph - (y - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">'
           f'{html.escape(title)}</text>']
    for b0, b1, label in bands:
        out.append(f'<rect x="{sx(b0):.1f}" y="{TOP}" width="{max(sx(b1) - sx(b0), 0):.1f}" '
                   f'height="{ph}" fill="#eeeeee"/>')
        out.append(f'<text x="{(sx(b0) + sx(b1)) / 2:.1f}" y="{TOP + 14}" text-anchor="middle" '
                   f'fill="#555">{html.escape(label)}</text>')
    for t in xt:
        out.append(f'<line x1="{sx(t):.1f}" y1="{TOP}" x2="{sx(t):.1f}" y2="{TOP + ph}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{sx(t):.1f}" y="{TOP + ph + 16}" text-anchor="middle">'
                   f'{_fmt(t)}</text>')
    for t in yt:
        out.append(f'<line x1="{LEFT}" y1="{sy(t):.1f}" x2="{LEFT + pw}" y2="{sy(t):.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 12}" text-anchor="middle">'
               f'{html.escape(xlabel)}</text>')
    out.append(f'<text x="16" y="{TOP + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {TOP + ph / 2})">{html.escape(ylabel)}</text>')
    for v, label in vlines:
        out.append(f'<line x1="{sx(v):.1f}" y1="{TOP}" x2="{sx(v):.1f}" y2="{TOP + ph}" '
                   f'stroke="#000" stroke-dasharray="5,4"/>')
        out.append(f'<text x="{sx(v) + 4:.1f}" y="{TOP + ph - 6}">{html.escape(label)}</text>')
    for i, (name, pts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        if pts:
            d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" '
                       f'stroke-width="1.5"/>')
        ly = TOP + 14 + 16 * i
        out.append(f'<line x1="{LEFT + pw - 150}" y1="{ly + 16}" x2="{LEFT + pw - 130}" '
                   f'y2="{ly + 16}" stroke="{color}" stroke-width="3"/>')
        out.append(f'<text x="{LEFT + pw - 125}" y="{ly + 20}">{html.escape(name)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
