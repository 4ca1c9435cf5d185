"""Loss curves as inline SVG, drawn on the server (no charting library, no JavaScript needed to see them)."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 640, 260, 40
COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a3069", "#57606a")


def line_chart(series: dict[str, list[list[float]]], *, title: str = "loss") -> str:
    """An SVG line chart of ``{label: [[x, y], ...]}``; a placeholder when there is no point yet."""
    points = [p for values in series.values() for p in values]
    if not points:
        return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
                f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no {escape(title)} yet</text></svg>')
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x: float) -> float:
        return PAD + (x - x0) / (x1 - x0) * (WIDTH - 2 * PAD)

    def sy(y: float) -> float:
        return HEIGHT - PAD - (y - y0) / (y1 - y0) * (HEIGHT - 2 * PAD)

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
             f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" font-size="11">{x0:g}</text>',
             f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" font-size="11" text-anchor="end">{x1:g}</text>',
             f'<text x="4" y="{PAD}" font-size="11">{y1:.3g}</text>',
             f'<text x="4" y="{HEIGHT - PAD}" font-size="11">{y0:.3g}</text>']
    for i, (label, values) in enumerate(series.items()):
        if not values:
            continue
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        parts.append(f'<polyline class="series" data-label="{escape(label)}" data-points="{len(values)}" '
                     f'fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        parts.append(f'<text x="{WIDTH - PAD}" y="{PAD + 14 * i}" font-size="12" text-anchor="end" '
                     f'fill="{colour}">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
