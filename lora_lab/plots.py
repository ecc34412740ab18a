"""Plots in one style, readable on a projector and in grayscale print.

Ranks are coloured along a sequential palette *and* carry distinct markers and dashes, so
they stay apart without colour; FullFT is always black and solid. Every function returns
the matplotlib Figure.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from lora_lab.training.methods import sort_labels

# pyplot and seaborn (which imports scipy.stats) load inside the functions that draw: ~1.5 s
# that a sweep, the command line and every worker process would otherwise pay at import
if TYPE_CHECKING:
    from matplotlib.figure import Figure

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DASHES = [(4, 1.5), (2, 1), (6, 2, 1, 2), (1, 1), (5, 1, 1, 1, 1, 1), (3, 3), (8, 2), (2, 3)]
FULLFT = "FullFT"


def guard_mathtext() -> None:
    """Make matplotlib's maths-text parser safe to call from two threads at once.

    JupyterLab >= 4.4 sends widget messages over kernel subshells, which ipykernel >= 7
    serves on their own threads: a panel's Run button draws its live plot while the main
    thread may be drawing a cell's figure. matplotlib keeps one maths-text parser per process
    (log-axis tick labels such as ``10^{-3}`` go through it), so two parses at once corrupt
    it and a figure fails with ``ParseException`` (seen in the browser test; matplotlib
    #26289, ipympl #610). Every parse here takes the lock matplotlib already holds while it
    draws a figure, so a parse waits for another thread's draw or parse. Idempotent."""
    from matplotlib import _mathtext
    from matplotlib.figure import Figure

    parse = _mathtext.Parser.parse
    if getattr(parse, "_lora_lab_guarded", False):
        return
    lock = getattr(Figure, "_render_lock", None) or _MATHTEXT_LOCK

    @functools.wraps(parse)
    def guarded(self, *args, **kwargs):
        with lock:
            return parse(self, *args, **kwargs)

    guarded._lora_lab_guarded = True
    _mathtext.Parser.parse = guarded


_MATHTEXT_LOCK = threading.RLock()  # where matplotlib has no render lock of its own


def set_style() -> None:
    """The package's plot style; also :func:`guard_mathtext`, since every notebook calls
    this first and its panels draw from a widget thread."""
    import seaborn as sns

    guard_mathtext()

    sns.set_theme(
        context="notebook",
        style="whitegrid",
        font_scale=1.15,
        rc={"figure.dpi": 110, "axes.titleweight": "bold", "lines.linewidth": 2.2},
    )


def _label_order(labels: Sequence[str]) -> list[str]:
    """FullFT first, then other full fine-tuning, then ranks ascending (numerically)."""
    return sort_labels(labels)


def line_styles(labels: Sequence[str]) -> dict[str, dict]:
    """Colour, marker and dash per label: FullFT black solid; others on a sequential map."""
    import seaborn as sns

    ordered = [lbl for lbl in _label_order(labels) if lbl != FULLFT]
    colours = sns.color_palette("viridis_r" if len(ordered) > 1 else "deep", max(len(ordered), 1))
    styles = {FULLFT: {"color": "black", "marker": "o", "dashes": (None, None), "zorder": 5}}
    for i, lbl in enumerate(ordered):
        styles[lbl] = {
            "color": colours[i],
            "marker": MARKERS[(i + 1) % len(MARKERS)],
            "dashes": DASHES[i % len(DASHES)],
            "zorder": 3,
        }
    return styles


def legend_outside(ax, **kw) -> None:
    """The legend beside the data, never over it: right of ``ax`` when ``ax`` is in its
    figure's rightmost column, else below it (a legend right of a left panel would cover
    its neighbour). Every figure and live panel places its legends here."""
    kw.pop("loc", None)
    kw.pop("bbox_to_anchor", None)
    kw.setdefault("fontsize", 8)
    kw.setdefault("frameon", True)
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
    if spec is None or spec.colspan.stop == spec.get_gridspec().ncols:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kw)
    else:
        kw.setdefault("ncol", min(3, len(handles)))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), borderaxespad=0.0, **kw)


def _draw(ax, x, y, style: dict, label: str, **kw) -> None:
    (line,) = ax.plot(
        x,
        y,
        color=style["color"],
        marker=style["marker"],
        markersize=5,
        label=label,
        zorder=style["zorder"],
        **kw,
    )
    if style["dashes"] != (None, None):
        line.set_dashes(style["dashes"])


def _axes(ax, figsize: tuple[float, float]):
    """The house style, and the given axes or a new figure of ``figsize``."""
    import matplotlib.pyplot as plt

    set_style()
    return (ax.figure, ax) if ax is not None else plt.subplots(figsize=figsize)


def _lines(ax, df: pd.DataFrame, x: str, y: str, hue: str) -> dict[str, dict]:
    """One styled line per ``hue`` value, in the standard order; returns the styles."""
    labels = df[hue].astype(str)
    styles = line_styles(labels.unique())
    for lbl in _label_order(labels.unique()):
        d = df[labels == lbl].sort_values(x)
        _draw(ax, d[x], d[y], styles[lbl], lbl)
    return styles


def plot_learning_curves(
    curves: pd.DataFrame,
    hue: str = "label",
    x: str = "step",
    y: str = "eval_loss",
    title: str = "Learning curves (best LR at each step)",
    ax=None,
    departures: dict | None = None,
) -> Figure:
    """Loss against log(step), one line per ``hue`` value (the post's figure 1 style).
    ``departures`` maps a label to a step to mark with a vertical tick."""
    fig, ax = _axes(ax, (7.5, 4.8))
    data = curves[curves[x] > 0]
    styles = _lines(ax, data, x, y, hue)
    for lbl, step in (departures or {}).items():
        if step is not None and lbl in styles:
            ax.axvline(step, color=styles[lbl]["color"], lw=1, ls=":", alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training step (log scale)")
    ax.set_ylabel("eval loss (nats / completion token)")
    ax.set_title(title)
    legend_outside(ax, title=None, frameon=True, ncol=2 if len(styles) > 4 else 1)
    fig.tight_layout()
    return fig


def plot_lr_curves(
    means: pd.DataFrame,
    hue: str = "label",
    optima: pd.DataFrame | None = None,
    title: str = "Final loss vs learning rate",
    ax=None,
    ylim: tuple | None = None,
) -> Figure:
    """U-curves: seed-mean loss (with seed std as error bars) against log(lr) per ``hue``.

    ``optima`` (:func:`lora_lab.analysis.optimal_lr` output) marks each optimum: a dotted
    line where it is interior at the search resolution, dash-dot where it is inside the grid
    but coarser, and an arrow at the edge pointing outwards where the best LR is an edge
    value (a bound, not an optimum)."""
    fig, ax = _axes(ax, (9, 4.8))
    styles = line_styles(means[hue].astype(str).unique())
    for lbl in _label_order(means[hue].astype(str).unique()):
        d = means[means[hue].astype(str) == lbl].sort_values("lr")
        st = styles[lbl]
        _draw(ax, d.lr, d["mean"], st, lbl)
        if "std" in d:
            ax.errorbar(
                d.lr,
                d["mean"],
                yerr=d["std"].fillna(0),
                fmt="none",
                ecolor=st["color"],
                alpha=0.6,
                capsize=3,
            )
        if optima is not None:
            for o in optima[optima[hue].astype(str) == lbl].itertuples():
                _mark_optimum(ax, o, st["color"])
    ax.set_xscale("log")
    # labels at 1, 2, 5 x 10^k only: minor labels run together on a one-decade range
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}".replace("e-0", "e-")))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("final eval loss (nats / token)")
    if ylim is not None:
        ax.set_ylim(*ylim)
    else:
        finite = means[np.isfinite(means["mean"])]
        if len(finite):
            # every method's optimum stays in view, the divergent far ends may not
            best = finite.groupby(finite[hue].astype(str))["mean"].min()
            lo = finite["mean"].min()
            hi = max(np.percentile(finite["mean"], 80), best.max())
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.25 * (hi - lo + 1e-9))
    ax.set_title(title)
    legend_outside(ax, frameon=True, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _mark_optimum(ax, o, colour) -> None:
    opt = getattr(o, "opt_lr", np.nan)
    if np.isfinite(opt):
        interior = bool(getattr(o, "interior", True))
        ax.axvline(opt, color=colour, lw=1.2, ls=":" if interior else "-.", alpha=0.9)
        lo, hi = getattr(o, "lr_lo", np.nan), getattr(o, "lr_hi", np.nan)
        if lo > 0 and np.isfinite(hi):  # where the optimum could lie (95 %)
            ax.axvspan(lo, hi, color=colour, alpha=0.07, lw=0)
        return
    best = getattr(o, "best_lr", np.nan)
    if not np.isfinite(best):
        return
    outward = "<" if getattr(o, "edge", None) == "low" else ">"
    ax.plot([best], [0.97], marker=outward, color=colour, markersize=11, markeredgecolor="black",
            transform=ax.get_xaxis_transform(), clip_on=False, zorder=6)  # fmt: skip
    ax.annotate("edge: bound", (best, 0.97), xycoords=("data", "axes fraction"),
                textcoords="offset points", xytext=(0, -14), ha="center", fontsize=7,
                color=colour)  # fmt: skip


def plot_loss_vs_batch(
    df: pd.DataFrame,
    hue: str = "label",
    y: str = "best_loss",
    title: str = "Best final loss vs batch size",
    ax=None,
) -> Figure:
    fig, ax = _axes(ax, (7, 4.5))
    _lines(ax, df, "batch_size", y, hue)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (log2 scale)")
    ax.set_ylabel("final eval loss")
    ax.set_title(title)
    legend_outside(ax, frameon=True)
    fig.tight_layout()
    return fig


def plot_loss_vs_n(
    table: pd.DataFrame,
    y: str = "loss",
    err: str | None = "loss_std",
    title: str = "Recall loss after a fixed budget, vs number of facts",
    ax=None,
) -> Figure:
    """Final loss (best LR, seed mean +- std) against the number of facts N, per method."""
    fig, ax = _axes(ax, (7, 4.5))
    styles = _lines(ax, table, "n_facts", y, "label")
    if err is not None:
        for lbl, d in table.groupby("label"):
            ax.errorbar(
                d.n_facts,
                d[y],
                yerr=d[err].fillna(0),
                fmt="none",
                ecolor=styles[lbl]["color"],
                capsize=3,
                alpha=0.7,
            )
    ax.set_xscale("log")
    ns = sorted(table.n_facts.unique())
    ax.set_xticks(ns, [f"{n:,}" for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("facts in the training set (log scale)")
    ax.set_ylabel("recall loss (nats / answer token)")
    ax.set_title(title)
    legend_outside(ax, frameon=True)
    fig.tight_layout()
    return fig


def plot_bits_vs_params(
    table: pd.DataFrame,
    reference_bits_per_param: dict[str, float] | None = None,
    title: str = "Bits stored vs trainable parameters",
    ax=None,
) -> Figure:
    """Bits stored (log) against trainable parameters (log): one line per N across methods,
    a dotted ceiling at each N's information content, and dashed lines ``bits = k * params``
    for each reference ``k`` (e.g. ``{"2 bits/param (Allen-Zhu & Li)": 2.0}``)."""
    import seaborn as sns

    fig, ax = _axes(ax, (9.5, 5))
    ns = sorted(table.n_facts.unique())
    greys = sns.color_palette("Greys", len(ns) + 2)[2:]
    styles = line_styles(table.label.unique())
    for n, colour in zip(ns, greys):
        d = table[table.n_facts == n].sort_values("trainable_params")
        ax.plot(d.trainable_params, d.bits_stored, "-", color=colour, lw=1.5, zorder=2)
        ax.axhline(d.info_bits.iloc[0], color=colour, ls=":", lw=1.2, zorder=1)
        ax.annotate(
            f"N={n:,}: {d.info_bits.iloc[0]:,.0f} bits",
            (table.trainable_params.min(), d.info_bits.iloc[0]),
            textcoords="offset points",
            xytext=(0, 3),
            fontsize=8,
            color=colour,
        )
        for _, row in d.iterrows():
            st = styles[row.label]
            ax.plot(
                row.trainable_params,
                row.bits_stored,
                st["marker"],
                color=st["color"],
                markersize=8,
                markeredgecolor="black",
                zorder=4,
            )
    for lbl in _label_order(table.label.unique()):
        st = styles[lbl]
        ax.plot([], [], st["marker"], color=st["color"], markeredgecolor="black", label=lbl)
    xs = np.geomspace(table.trainable_params.min() / 1.5, table.trainable_params.max() * 1.5)
    for (name, k), ls in zip((reference_bits_per_param or {}).items(), ["--", "-.", (0, (5, 1))]):
        ax.plot(xs, k * xs, ls=ls, color="crimson", lw=1.2, label=name, zorder=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(table.bits_stored.min() / 2, table.info_bits.max() * 3)
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("bits stored (log scale)")
    ax.set_title(title)
    legend_outside(ax, frameon=True, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
