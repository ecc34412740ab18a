"""The analysis of a user's runs as a Markdown summary and a self-contained HTML report.

The HTML embeds its figures (PNG, base64) and no scripts or remote files, so it opens offline
and can be mailed or attached to a lab notebook. Every number in both comes from the
:class:`~lora_lab.own_runs.analysis.Analysis` they render.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lora_lab._version import __version__
from lora_lab.analysis import seed_mean
from lora_lab.plots import legend_outside, line_styles, plot_lr_curves
from lora_lab.tables import readable

if TYPE_CHECKING:  # the analysis renders itself through this module
    from lora_lab.own_runs.analysis import Analysis

POST_RATIO = 10.0  # "LoRA Without Regret": LoRA's best LR ~10x FullFT's (9.8 over 14 models)


# ----------------------------------------------------------------------------- figures


def figure_u_curves(a: Analysis):
    """Seed-mean metric against LR per method, each optimum marked as the notebooks mark it."""
    means = seed_mean(a.table.runs, ["label"], "value")
    fig = plot_lr_curves(means, optima=a.optima, title=f"{a.metric} against learning rate")
    fig.axes[0].set_ylabel(f"{a.metric} ({'higher' if a.table.higher_is_better else 'lower'}"
                           " is better)")  # fmt: skip
    return fig


def figure_ratios(a: Analysis):
    """Each method's optimal LR over the reference's, with its 95 % interval."""
    r = a.ratios
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(len(r), 2) + 1.6))
    y = np.arange(len(r))
    for i, row in enumerate(r.itertuples()):
        lo = row.lo if row.lo > 0 else row.ratio / 1e3
        hi = row.hi if math.isfinite(row.hi) else row.ratio * 1e3
        ax.plot([lo, hi], [i, i], color="black", lw=2, solid_capstyle="butt")
        ax.plot(row.ratio, i, "o", color="black")
    ax.axvline(1, color="0.3", lw=0.8)
    ax.axvline(POST_RATIO, color="crimson", ls="--", label=f"the post: ~{POST_RATIO:g}x")
    ax.set_yticks(y, list(r.label))
    ax.set_xscale("log")
    lo_all = min([x for x in r.lo if x > 0] + list(r.ratio) + [0.5])
    hi_all = max([x for x in r.hi if math.isfinite(x)] + list(r.ratio) + [POST_RATIO * 1.5])
    ax.set_xlim(lo_all / 1.5, hi_all * 1.5)
    ax.set_xlabel(f"optimal LR / {a.reference}'s (95 % interval; an open end runs off the axis)")
    ax.set_title(f"Learning-rate ratio to {a.reference}")
    legend_outside(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    fig.tight_layout()
    return fig


def figure_curves(a: Analysis):
    """The best-over-LR curve of each method against step (where runs logged curves)."""
    if a.curves is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    styles = line_styles(a.curves.label.unique())
    for label in a.table.labels:
        d = a.curves[a.curves.label == label].sort_values("step")
        if len(d):
            st = styles[label]
            (line,) = ax.plot(d.step, d.value, color=st["color"], marker=st["marker"], ms=3,
                              label=label)  # fmt: skip
            if st["dashes"][0] is not None:
                line.set_dashes(st["dashes"])
    ax.set_xlabel("step")
    ax.set_ylabel(a.metric)
    ax.set_title(f"Best over LR at each step (seed mean), {a.metric}")
    legend_outside(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    fig.tight_layout()
    return fig


FIGURES = {"u_curves": figure_u_curves, "lr_ratio": figure_ratios, "curves": figure_curves}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- tables


def optima_table(a: Analysis) -> pd.DataFrame:
    cols = ["label", "n_lrs", "seeds", "best_lr", "best_value", "opt_lr", "lr_lo", "lr_hi",
            "status"]  # fmt: skip
    out = readable(a.optima[cols], lr_columns=["lr_lo", "lr_hi"], digits=4)
    out.loc[a.optima.lr_lo == 0, "lr_lo"] = "open (grid edge)"
    out.loc[~np.isfinite(a.optima.lr_hi), "lr_hi"] = "open (grid edge)"
    return out


def ratio_table(a: Analysis) -> pd.DataFrame:
    r = a.ratios.copy()
    r["interval"] = [_interval(lo, hi) for lo, hi in zip(r.lo, r.hi)]
    r["ratio"] = r.ratio.map(lambda v: f"{v:.3g}x")
    return r[["label", "ratio", "interval", "seeds", "verdict"]]


def _interval(lo: float, hi: float) -> str:
    left = f"{lo:.3g}x" if lo > 0 else "0"
    right = f"{hi:.3g}x" if math.isfinite(hi) else "unbounded"
    return f"[{left}, {right}]"


def gap_table(a: Analysis) -> pd.DataFrame:
    g = a.gaps[["label", "verdict_text", "seeds", "seeds_for_margin", "read_at"]].rename(
        columns={"verdict_text": f"{a.metric} minus {a.reference}'s, each at its best LR"}
    )
    return g


def headline(a: Analysis) -> list[str]:
    """One line per method: status, ratio and gap."""
    lines = []
    ratios = a.ratios.set_index("label")
    gaps = a.gaps.set_index("label")
    for o in a.optima.itertuples():
        line = f"{o.label}: {o.status}"
        if o.label in ratios.index:
            r = ratios.loc[o.label]
            line += (f"; LR ratio to {a.reference} {r.ratio:.3g}x {_interval(r.lo, r.hi)} "
                     f"({r.verdict})")  # fmt: skip
            line += f"; gap {gaps.loc[o.label].verdict_text}"
        lines.append(line)
    return lines


def _md_table(df: pd.DataFrame) -> str:
    cells = df.astype(object).where(df.notna(), "—").astype(str)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |"
            for row in cells.itertuples(index=False)]  # fmt: skip
    return "\n".join([head, rule, *body])


READING = (
    "How to read it: an optimum is a best LR with a measured, worse neighbour on each side "
    "at 1.47x (6 LRs per decade); an edge value is a bound. A location interval holds the "
    "grid points no neighbour beats (paired seeds), widened by one; a ratio carries both "
    "locations. A gap is read at each method's best LR with seeds paired, as better, worse, "
    "equivalent within the margin you set, or not resolved. 95 % intervals are t intervals "
    "whose coverage lora_lab's tests simulate; with one seed there is no interval."
)


def markdown_report(a: Analysis, figures: dict[str, str] | None = None) -> str:
    """The report as Markdown (figures linked when ``figures`` maps names to files)."""
    t = a.table
    parts = [
        f"# Analysis of {t.source}",
        f"{len(t.runs)} runs, {len(t.labels)} methods, metric `{t.metric}` "
        f"({'higher' if t.higher_is_better else 'lower'} is better), reference "
        f"**{a.reference}**"
        + (f", equivalence margin ±{a.margin:g}" if a.margin else ", no equivalence margin set")
        + ".",
        "## Verdicts",
        "\n".join(f"- {line}" for line in headline(a)),
    ]
    if a.notes:
        parts += ["## Notes on the input", "\n".join(f"- {n}" for n in a.notes)]
    parts += ["## Best LR per method", _md_table(optima_table(a))]
    if figures and "u_curves" in figures:
        parts.append(f"![U-curves]({figures['u_curves']})")
    parts += [f"## LR ratio to {a.reference}", _md_table(ratio_table(a))]
    if figures and "lr_ratio" in figures:
        parts.append(f"![LR ratio]({figures['lr_ratio']})")
    parts += [f"## Gap to {a.reference}", _md_table(gap_table(a))]
    if figures and "curves" in figures:
        parts += ["## Curves", f"![curves]({figures['curves']})"]
    parts.append("## What to run next")
    if a.next_runs.empty:
        parts.append("Nothing: every optimum is interior at 1.47x and located.")
    else:
        parts.append(_md_table(readable(a.next_runs)))
    parts.append(READING)
    return "\n\n".join(parts) + "\n"


def html_report(a: Analysis) -> str:
    """The report as one offline HTML page, figures embedded."""
    t = a.table
    figs = {name: f(a) for name, f in FIGURES.items()}

    def img(name: str) -> str:
        fig = figs.get(name)
        if fig is None:
            return ""
        data = base64.b64encode(_png(fig)).decode()
        return f'<img alt="{name}" src="data:image/png;base64,{data}">'

    def tbl(df: pd.DataFrame) -> str:
        return df.to_html(index=False, na_rep="—", escape=True, border=0, classes="t")

    esc = html.escape
    notes = "".join(f"<li>{esc(n)}</li>" for n in a.notes)
    nxt = ("<p>Nothing: every optimum is interior at 1.47x and located.</p>"
           if a.next_runs.empty else tbl(readable(a.next_runs)))  # fmt: skip
    body = f"""<h1>Analysis of {esc(t.source)}</h1>
<p>{len(t.runs)} runs, {len(t.labels)} methods, metric <code>{esc(t.metric)}</code>
({'higher' if t.higher_is_better else 'lower'} is better), reference <b>{esc(a.reference)}</b>,
{f'equivalence margin ±{a.margin:g}' if a.margin else 'no equivalence margin set'}.</p>
<h2>Verdicts</h2><ul>{''.join(f'<li>{esc(x)}</li>' for x in headline(a))}</ul>
{f'<h2>Notes on the input</h2><ul>{notes}</ul>' if notes else ''}
<h2>Best LR per method</h2>{tbl(optima_table(a))}{img('u_curves')}
<h2>LR ratio to {esc(a.reference)}</h2>{tbl(ratio_table(a))}{img('lr_ratio')}
<h2>Gap to {esc(a.reference)}</h2>{tbl(gap_table(a))}
{'<h2>Curves</h2>' + img('curves') if figs.get('curves') is not None else ''}
<h2>What to run next</h2>{nxt}
<p class="how">{esc(READING)}</p>
<p class="foot">lora_lab {esc(__version__)} · <code>lora-lab analyze</code></p>"""
    for fig in figs.values():
        if fig is not None:
            plt.close(fig)
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
             "padding:0 1em;color:#222}table.t{border-collapse:collapse;font-size:0.9em;"
             "margin:0.5em 0}table.t td,table.t th{border-bottom:1px solid #ddd;padding:3px 8px;"
             "text-align:left}img{max-width:100%;margin:0.5em 0}.how,.foot{color:#555;"
             "font-size:0.9em}")  # fmt: skip
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>lora_lab "
            f"analysis: {esc(t.source)}</title><style>{style}</style></head><body>{body}"
            "</body></html>\n")  # fmt: skip


def write_report(a: Analysis, out: str | Path) -> Path:
    """Write ``report.html``, ``summary.md`` (figures beside it as PNG), ``runs.csv`` (the
    tidy table) and ``next_runs.csv`` into ``out``. Everything is written to a temporary
    folder first and moved into place at the end: a failure leaves nothing half-written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".analyze-", dir=out.parent))
    try:
        files = {}
        for name, make in FIGURES.items():
            fig = make(a)
            if fig is not None:
                (tmp / f"{name}.png").write_bytes(_png(fig))
                files[name] = f"{name}.png"
        (tmp / "summary.md").write_text(markdown_report(a, files))
        (tmp / "report.html").write_text(html_report(a))
        a.table.to_csv(str(tmp / "runs.csv"))
        a.next_runs.to_csv(tmp / "next_runs.csv", index=False)
        out.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "report.html"
