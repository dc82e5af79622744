"""The benchmark's ``report.html``: self-contained, and it opens with what a person wants to know.

First, at a glance: per stage and peer, survey_engine's speed-up and whether the answers agree
(and which peers were not installed, with the command to install them). Then per stage a plot
of time against rows (log-log, each tool a line; a bar per tool where only one size was run) and
that stage's table. Then the cost models, and last the machine record and every measurement,
in containers that scroll rather than widen the page.
"""

from __future__ import annotations

import html
import json
import re

from survey_engine.bench.cost_model import OURS
from survey_engine.catalog.plots import png_html

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd} h3{margin:1.2em 0 .3em}
.lead{color:#555;margin-top:0}
.scroll{overflow-x:auto;max-width:100%}
.stage{display:flex;flex-wrap:wrap;gap:.5em 1.5em;align-items:flex-start} .stage .cell{flex:1 1 380px;min-width:0}
table{border-collapse:collapse;font-size:88%;margin:.4em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;white-space:nowrap}
td.note{min-width:16em;max-width:30em;overflow-wrap:break-word;color:#555} td.case{min-width:11em}
tr.ours td{font-weight:600}
.yes{color:#17692b;font-weight:600} .no{color:#b00020;font-weight:700} .na{color:#777}
.faster{color:#17692b;font-weight:600} .slower{color:#a15c00;font-weight:600}
img{max-width:100%;height:auto;display:block} .stage img{flex:0 1 auto;min-width:0}
.box{border:1px solid #e3b4b4;background:#fff4f4;padding:.5em 1em;margin:1em 0}
.info{border:1px solid #c9d7ea;background:#f5f8fc;padding:.5em 1em;margin:1em 0}
code{background:#f1f1f1;padding:0 3px}
ul.notes{font-size:85%;color:#555;margin-top:.2em}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:85%}
"""
FULL_COLUMNS = {
    "suite": "suite",
    "case": "case",
    "tool": "tool",
    "workers": "workers",
    "rows": "rows",
    "seconds": "seconds: median (min-max)",
    "rows_per_s": "rows/s",
    "peak_rss_gib": "peak GiB, all processes",
    "largest_process_gib": "peak GiB, largest process",
    "agree": "agree",
    "note": "note",
}


def html_report(report: dict) -> str:
    """The whole page as one string (plots are embedded PNGs)."""
    rows = [_with_gib(r) for r in report["rows"]]
    colors = _tool_colors(rows)
    params, machine = report["params"], report["machine"]
    kind = "quick" if params.get("quick") else "full"
    parts = [
        f"<h1>survey_engine benchmarks</h1><p class='lead'>{kind} run, {html.escape(str(machine.get('date')))}, "
        f"{machine.get('cores')} cores, {machine.get('memory_gib')} GiB"
        + (f", commit {html.escape(machine['git_commit'])}" if machine.get("git_commit") else "")
        + ". "
        "Speed-up = the peer's time / survey_engine's time on the same data and cores (above 1: survey_engine is faster). "
        "Agree = the same rows, the same pair set or metrics within 5%.</p>"
    ]
    if report.get("errors"):
        parts.append(
            "<div class='box'><b>Suites that failed</b><pre>"
            + html.escape(json.dumps(report["errors"], indent=1))
            + "</pre></div>"
        )
    unmeasured: dict[
        str, dict
    ] = {}  # why a tool has no time (a peer not installed, data or a service missing) -> suites
    for r in rows:
        if not r.get("seconds") and r.get("note") and not str(r["note"]).startswith("not run above"):
            unmeasured.setdefault(r["note"], {})[r["suite"]] = None
    if unmeasured:
        items = "".join(
            f"<li>{html.escape(note)} <span class='na'>({html.escape(', '.join(suites))})</span></li>"
            for note, suites in unmeasured.items()
        )
        parts.append(f"<div class='info'><b>Not measured in this run</b><ul>{items}</ul></div>")
    parts.append("<h2>At a glance</h2>" + _glance_table(rows))
    for suite in dict.fromkeys(r["suite"] for r in rows):
        sub = [r for r in rows if r["suite"] == suite]
        parts.append(f"<h2 id='{html.escape(suite)}'>{html.escape(suite)}</h2>")
        parts.append(
            f"<div class='stage'>{_stage_figure(suite, sub, colors) or ''}<div class='cell'>{_stage_table(sub)}</div></div>"
        )
    parts.append(_cost_html(report))
    parts.append("<h2>Machine</h2>" + _machine_html(report))
    head = "".join(f"<th>{html.escape(title)}</th>" for title in FULL_COLUMNS.values())
    body = "".join("<tr>" + "".join(_cell(c, r) for c in FULL_COLUMNS) + "</tr>" for r in rows)
    parts.append(f"<h2>All measurements</h2><div class='scroll'><table><tr>{head}</tr>{body}</table></div>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>survey_engine benchmarks</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )


def _with_gib(r: dict) -> dict:
    return {
        **r,
        "peak_rss_gib": (r["peak_rss_bytes"] / 2**30) if r.get("peak_rss_bytes") else None,
        "largest_process_gib": (r["peak_rss_process_bytes"] / 2**30)
        if r.get("peak_rss_process_bytes")
        else None,
    }


def _tool_colors(rows: list[dict]) -> dict:
    """One colour per tool across every plot: survey_engine (and xgboost.dask) always blue."""
    palette = ["#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
    colors = {t: "#1f4e9c" for t in OURS}
    for tool in dict.fromkeys(r["tool"] for r in rows):
        if tool not in colors:
            colors[tool] = palette[(len(colors) - len(OURS)) % len(palette)]
    return colors


def case_kind(case: str) -> str:
    """A case without its numbers: the same measurement at another size has the same kind."""
    return re.sub(r"\d[\d,._]*", "N", case)


def _ours_for(peer: dict, measured: list[dict]) -> dict | None:
    """Our row a peer row is compared with: the same case at the same workers where we ran that
    count (training), else our run with the most workers (a peer in one process)."""
    same = [o for o in measured if o["tool"] in OURS and o["case"] == peer["case"]]
    exact = [o for o in same if o["workers"] == peer["workers"]]
    return (exact or sorted(same, key=lambda o: o["workers"])[-1:] or [None])[0]


def speedups(rows: list[dict]) -> list[dict]:
    """Each peer row with our matching row and the speed-up (peer seconds / ours)."""
    measured = [r for r in rows if r.get("seconds") and r["suite"] != "scaling"]
    out = []
    for r in measured:
        if r["tool"] in OURS:
            continue
        o = _ours_for(r, measured)
        if o:
            out.append(
                {
                    "suite": r["suite"],
                    "case": r["case"],
                    "peer": r["tool"],
                    "rows": r.get("rows"),
                    "workers": o["workers"],
                    "ratio": r["seconds"] / o["seconds"],
                    "agree": r.get("agree"),
                }
            )
    return out


def _rows_label(n) -> str:
    if not n:
        return "-"
    exp = len(str(int(n))) - 1
    if int(n) == 10**exp:
        return f"10<sup>{exp}</sup>"
    if int(n) % 10**exp == 0:
        return f"{int(n) // 10**exp}x10<sup>{exp}</sup>"
    return f"{int(n):,}"


def _agree_html(v) -> str:
    if v is True:
        return "<span class='yes'>yes</span>"
    if v is False:
        return "<span class='no'>NO</span>"
    return "<span class='na'>-</span>"


def _ratio_html(x: float) -> str:
    return f"<span class='{'faster' if x >= 1 else 'slower'}'>{x:.2f}x</span>"


def _glance_table(rows: list[dict]) -> str:
    """Per stage and peer: the speed-up at each size and agreement, or why the peer has no time."""
    ratios = speedups(rows)
    lines = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        sub = [r for r in rows if r["suite"] == suite]
        peers = [t for t in dict.fromkeys(r["tool"] for r in sub) if t not in OURS]
        ours = [r for r in sub if r["tool"] in OURS and r.get("seconds")]
        agree_ours = [r.get("agree") for r in ours]
        if not peers:
            verdict = (
                f"{sum(a is True for a in agree_ours)} of {len(agree_ours)} checks pass" if ours else "-"
            )
            why = "; ".join(
                dict.fromkeys(str(r.get("note")) for r in sub if not r.get("seconds") and r.get("note"))
            )
            lines.append((suite, "(no peer)", html.escape(why) or "measured alone (see below)", verdict))
        for peer in peers:
            mine = [x for x in ratios if x["suite"] == suite and x["peer"] == peer]
            if mine:
                by_kind: dict[str, list] = {}
                for x in mine:
                    by_kind.setdefault(_short_kind(suite, x["case"]), []).append(x)
                text = "<br>".join(
                    (f"{html.escape(k)}: " if k else "")
                    + ", ".join(
                        f"{_ratio_html(x['ratio'])} at {_rows_label(x['rows'])}"
                        + (f" ({x['workers']} w)" if _several_workers(mine) else "")
                        for x in xs
                    )
                    for k, xs in by_kind.items()
                )
                n_ok = sum(x["agree"] is True for x in mine)
                verdict = _agree_html(n_ok == len(mine)) + f" {n_ok} of {len(mine)}"
            else:
                notes = dict.fromkeys(str(r.get("note")) for r in sub if r["tool"] == peer and r.get("note"))
                text, verdict = (
                    "<span class='na'>" + html.escape("; ".join(notes) or "no time") + "</span>",
                    "<span class='na'>-</span>",
                )
            lines.append((suite, html.escape(peer), text, verdict))
    body = "".join(
        f"<tr><td><a href='#{html.escape(s)}'>{html.escape(s)}</a></td><td>{p}</td><td>{t}</td><td>{v}</td></tr>"
        for s, p, t, v in lines
    )
    return (
        "<div class='scroll'><table><tr><th>stage</th><th>peer</th><th>survey_engine's speed-up (peer time / ours)</th>"
        f"<th>agree</th></tr>{body}</table></div>"
    )


def _several_workers(xs: list[dict]) -> bool:
    return len({x["workers"] for x in xs}) > 1


def _short_kind(suite: str, case: str) -> str:
    """A short name for a kind of measurement within a stage (warm/cold, training/prediction)."""
    if suite == "crossmatch":
        return "cold" if case.endswith(", cold") else "warm"
    if suite == "train":
        return "prediction" if "predict with" in case else "training"
    if suite == "tap":
        return "end to end" if "(end to end)" in case else "fetch"
    if suite == "real":
        return case.split(" (")[0]
    return ""


def _stage_figure(suite: str, rows: list[dict], colors: dict) -> str | None:
    """Time against rows, log-log, one line per tool, one panel per kind of measurement; a bar per
    tool where a kind was measured at one size only (a line needs two). Scaling: against workers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.get("seconds")]
    if not measured:
        return None
    xkey = "workers" if suite == "scaling" else "rows"
    kinds: dict[str, list[dict]] = {}
    for r in measured:
        key = (
            "strong and weak scaling of import"
            if suite == "scaling"
            else (_short_kind(suite, r["case"]) or case_kind(r["case"]))
        )
        kinds.setdefault(key, []).append(r)
    n = len(kinds)
    cols = min(n, 3)
    fig, axes = plt.subplots(
        (n + cols - 1) // cols,
        cols,
        figsize=(4.2 * cols + 0.6, 3.4 * ((n + cols - 1) // cols)),
        squeeze=False,
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    bars, lines_drawn = 0, False
    for ax, (kind, sub) in zip(axes.flat, kinds.items()):
        sizes = {r[xkey] for r in sub}
        several = {
            t for t in {r["tool"] for r in sub} if len({r["workers"] for r in sub if r["tool"] == t}) > 1
        }

        def label(r, several=several):
            if suite == "scaling":
                return f"{r['tool']}, {r['case']}"
            return f"{r['tool']} ({r['workers']} w)" if r["tool"] in several else r["tool"]

        if len(sizes) > 1:
            _lines_panel(ax, suite, sub, xkey, several, label, colors)
            lines_drawn = True
        else:
            bars = max(bars, _bars_panel(ax, sub, next(iter(sizes)), label, colors))
        ax.set_ylabel("seconds (median)" if len(sizes) > 1 else "")
        title = suite if n == 1 and suite not in ("crossmatch", "train", "tap", "real", "scaling") else kind
        ax.set_title(title if len(title) <= 48 else title[:46] + "...", fontsize=10)
        if len(sizes) > 1:
            ax.legend(fontsize=7, loc="best")
    if not lines_drawn:  # bars only: as tall as the bars need
        fig.set_size_inches(fig.get_size_inches()[0], (1.0 + 0.42 * max(bars, 2)) * ((n + cols - 1) // cols))
    fig.tight_layout()
    return png_html(fig, dpi=100, alt="time against rows")


def _lines_panel(ax, suite: str, sub: list[dict], xkey: str, several: set, label, colors: dict) -> None:
    """Seconds against rows (or workers), log-log, a line per tool; ours drawn thicker."""
    from matplotlib.ticker import NullLocator

    sizes = {r[xkey] for r in sub}
    for line in dict.fromkeys(label(r) for r in sub):
        pts = sorted((r[xkey], r["seconds"], r["tool"]) for r in sub if label(r) == line)
        tool = pts[0][2]
        ours = tool in OURS
        fewer = (
            suite != "scaling"
            and tool in several
            and pts
            and min(r["workers"] for r in sub if label(r) == line)
            < max(r["workers"] for r in sub if r["tool"] == tool)
        )
        style = ("o-" if ours else "s--") if suite != "scaling" or "strong" in line else "^:"
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            style,
            color=colors[tool],
            lw=2.4 if ours else 1.4,
            alpha=0.45 if fewer else 1,
            label=line,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_ticks(ax, "y")
    if xkey == "workers":
        ax.set_xticks(sorted(sizes), [str(w) for w in sorted(sizes)])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("workers" if xkey == "workers" else "rows")
    ax.grid(True, which="both", alpha=0.25)


def _bars_panel(ax, sub: list[dict], size: int, label, colors: dict) -> int:
    """A bar per tool where a kind was measured at one size only (ours first); the number of bars."""
    lines = dict.fromkeys(label(r) for r in sub)
    ordered = sorted(lines, key=lambda t: (not any(r["tool"] in OURS for r in sub if label(r) == t), t))
    secs = [next(r["seconds"] for r in sub if label(r) == t) for t in ordered]
    tools = [next(r["tool"] for r in sub if label(r) == t) for t in ordered]
    ax.barh(range(len(ordered)), secs, height=0.6, color=[colors[t] for t in tools])
    ax.set_ylim(len(ordered) - 0.5, -0.5)
    ax.set_yticks(range(len(ordered)), ordered, fontsize=8)
    ax.set_xscale("log")
    _plain_ticks(ax, "x")
    ax.set_xlabel(f"seconds ({_plain_rows(size)} rows)")
    for y, sec in enumerate(secs):
        ax.text(sec, y, f" {sec:.3g} s", va="center", fontsize=8)
    ax.margins(x=0.35)
    ax.grid(True, axis="x", which="both", alpha=0.25)
    return len(ordered)


def duration_text(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def _plain_ticks(ax, axes: str) -> None:
    """Log axes labelled 0.1, 1, 10, 100 (not 10^-1 or 4x10^1), minor ticks unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    for axis, limits in ([(ax.xaxis, ax.get_xlim())] if "x" in axes else []) + (
        [(ax.yaxis, ax.get_ylim())] if "y" in axes else []
    ):
        low, high = sorted(limits)
        if high < 4 * low:  # a narrow range: evenly spaced round numbers
            axis.set_major_locator(MaxNLocator(nbins=4))
        elif high < 300 * low:  # under 2.5 decades: 1, 2, 5, 10, 20, ... so that a few ticks are labelled
            axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(fmt)
        axis.set_minor_formatter(NullFormatter())


def _plain_rows(n) -> str:
    return f"{int(n):,}" if n else "?"


def _stage_table(rows: list[dict]) -> str:
    """One line per case (and worker count where a tool ran at several): each tool's median time, a
    peer's speed-up against ours beside it, the peak memory of all processes under it, and whether
    all agree; then the tools' notes."""
    measured = [r for r in rows if r.get("seconds")]
    tools = sorted(dict.fromkeys(r["tool"] for r in rows), key=lambda t: t not in OURS)
    by_workers = any(len({r["workers"] for r in rows if r["tool"] == t}) > 1 for t in tools)
    keys = dict.fromkeys((r["case"], r["workers"] if by_workers else None) for r in rows)
    head = (
        "<tr><th>case</th>"
        + ("<th>workers</th>" if by_workers else "")
        + "".join(f"<th>{html.escape(t)}</th>" for t in tools)
        + "<th>agree</th></tr>"
    )
    body = []
    for case, workers in keys:
        line = [r for r in rows if r["case"] == case and (workers is None or r["workers"] == workers)]
        cells = []
        for tool in tools:
            r = next((x for x in line if x["tool"] == tool), None)
            cells.append(_time_cell(r, measured))
        agrees = [r.get("agree") for r in line if r.get("seconds")]
        agree = False if False in agrees else (True if agrees and all(a is True for a in agrees) else None)
        body.append(
            f"<tr><td>{html.escape(_readable_case(case))}</td>"
            + (f"<td class='num'>{workers}</td>" if by_workers else "")
            + "".join(cells)
            + f"<td>{_agree_html(agree)}</td></tr>"
        )
    notes = dict.fromkeys((r["tool"], r["note"]) for r in rows if r.get("note") and r.get("seconds"))
    # a tool's note repeated with more after it (the cold run's "...; a fresh process: ..."): keep the longer
    notes = {
        (t, n): None
        for t, n in notes
        if not any(t2 == t and n2 != n and n2.startswith(n) for t2, n2 in notes)
    }
    note_html = (
        "<ul class='notes'>"
        + "".join(f"<li><b>{html.escape(t)}</b>: {html.escape(n)}</li>" for t, n in notes)
        + "</ul>"
        if notes
        else ""
    )
    return f"<div class='scroll'><table>{head}{''.join(body)}</table></div>{note_html}"


def _time_cell(r: dict | None, measured: list[dict]) -> str:
    if r is None:
        return "<td></td>"
    if not r.get("seconds"):
        note = str(r.get("note") or "no time")
        short = (
            "not installed"
            if note.startswith("not installed")
            else "not run"
            if note.startswith("not run")
            else note
        )
        return f"<td class='na' title='{html.escape(note, quote=True)}'>{html.escape(short)}</td>"
    text = f"{r['seconds']:.3g} s"
    memory = f"<br><small class='na'>{r['peak_rss_gib']:.2g} GiB</small>" if r.get("peak_rss_gib") else ""
    if r["tool"] in OURS:
        return f"<td class='num'><b>{text}</b>{memory}</td>"
    o = _ours_for(r, measured) if r["suite"] != "scaling" else None
    ratio = f" <small>({_ratio_html(r['seconds'] / o['seconds'])})</small>" if o else ""
    return f"<td class='num'>{text}{ratio}{memory}</td>"


def _readable_case(case: str) -> str:
    """Row counts in a case with thousands separators (100000 x 120000 -> 100,000 x 120,000)."""
    return re.sub(r"\d{5,}", lambda m: f"{int(m.group()):,}", case)


def _num(v) -> str:
    if v is None:
        return ""
    return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}"


def _cell(column: str, r: dict) -> str:
    v = r.get(column)
    if column == "seconds" and v:
        spread = (
            f" ({r['min_s']:.3g}-{r['max_s']:.3g})"
            if r.get("min_s") is not None and r.get("repeats", 1) > 1
            else ""
        )
        return f"<td class='num'>{v:.3g}{spread}</td>"
    if column == "agree":
        return f"<td>{_agree_html(v)}</td>"
    if column == "note":
        return f"<td class='note'>{html.escape(str(v or ''))}</td>"
    if column == "case":
        return f"<td class='case'>{html.escape(_readable_case(str(v)))}</td>"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"<td class='num'>{_num(v)}</td>"
    return f"<td>{html.escape('' if v is None else str(v))}</td>"


def _cost_html(report: dict) -> str:
    parts = []
    if report.get("cost_models"):
        head = "".join(
            f"<th>{c}</th>"
            for c in (
                "stage",
                "c: core-us per row",
                "a: s",
                "s: driver us per row",
                "sizes fitted",
                "worst residual of c",
            )
        )
        body = "".join(
            f"<tr><td>{m['stage']}</td><td class='num'>{m['core_s_per_row'] * 1e6:.3g}</td><td class='num'>{m['serial_s']:.3g}</td>"
            f"<td class='num'>{m.get('serial_s_per_row', 0) * 1e6:.3g}</td>"
            f"<td>{', '.join(f'{x:,}' for x in m['sizes'])}</td><td class='num'>{m['max_rel_residual']:.0%}</td></tr>"
            for m in report["cost_models"]
        )
        parts.append(
            "<h2>Cost models</h2><p>Fitted from every task's time on the workers: time = a + s x rows + c x rows / cores.</p>"
            f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"
        )
    if report.get("projections"):
        head = "<tr><th>stage</th><th>catalog</th><th>rows</th><th>cores</th><th>about</th></tr>"
        body = "".join(
            f"<tr><td>{p['stage']}</td><td>{p['catalog']}</td><td class='num'>{p['rows']:,}</td><td class='num'>{p['cores']}</td>"
            f"<td class='num'>{duration_text(p['projected_hours'])}</td></tr>"
            for p in report["projections"]
        )
        parts.append(
            "<h3>Projection from the cost models</h3><p>Not a measurement: it assumes the per-row cost holds at scale, "
            f"an even spread over the cores and storage that keeps up.</p><div class='scroll'><table>{head}{body}</table></div>"
        )
    return "".join(parts)


def _machine_html(report: dict) -> str:
    m = report["machine"]
    keys = ["date", "cpu", "cores", "memory_gib", "gpu", "python", "platform", "git_commit"]
    rows = "".join(f"<tr><th>{k}</th><td>{html.escape(str(m.get(k)))}</td></tr>" for k in keys)
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())
    rows += f"<tr><th>versions</th><td>{html.escape(versions)}</td></tr>"
    params = report.get("params", {})
    rows += f"<tr><th>parameters</th><td><pre>{html.escape(json.dumps(params, default=str))}</pre></td></tr>"
    for part in report.get("merged_from", []):
        rows += (
            f"<tr><th>merged run</th><td>suites {html.escape(', '.join(part['suites']))}: started {html.escape(str(part['started']))}, "
            f"commit {html.escape(str(part['machine'].get('git_commit')))}</td></tr>"
        )
    return f"<div class='scroll'><table>{rows}</table></div>"
