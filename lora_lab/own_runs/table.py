"""One tidy run table for sweeps made anywhere: one row per run, checked on the way in.

Every importer (:mod:`lora_lab.own_runs.importers`) ends in :func:`tidy`, so a CSV, a folder
of Hugging Face Trainer outputs, a W&B export and lora_lab's own records are read by the same
analysis, and bad input is refused here once, with a message that says what to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# What a run is: the columns every table must have (after --map) and those it may have.
REQUIRED = ("method", "lr", "seed")
OPTIONAL = ("rank", "target_modules", "alpha", "label", "step", "diverged")
# Columns that identify a run; two rows with the same identity must agree on the metric.
IDENTITY = ("method", "rank", "target_modules", "alpha", "lr", "seed")
# The metric names looked for, in order, when none is given.
DEFAULT_METRICS = ("eval_loss", "final_loss", "loss", "metric")

FULL_NAMES = {"full", "fullft", "full_ft", "full-ft", "fft", "full finetuning",
              "full fine-tuning", "full_finetune", "full-finetune", "ft"}  # fmt: skip
LORA_NAMES = {"lora", "peft", "peft-lora", "peft_lora"}
FULLFT_LABEL = "FullFT"  # as lora_lab.training.methods labels full fine-tuning


class RunTableError(ValueError):
    """Input that cannot be analysed; the message names the source and the fix."""


@dataclass
class RunTable:
    """Runs in tidy form. ``runs``: one row per run with ``label``, ``method``, ``rank``,
    ``target_modules``, ``alpha``, ``lr``, ``seed``, ``value`` (the metric at the end of the
    run, NaN where it diverged) and ``diverged``. ``curves``: the metric against ``step``
    per run (``label``, ``lr``, ``seed``, ``step``, ``value``), or None. ``notes`` say what
    was assumed or dropped on the way in."""

    runs: pd.DataFrame
    metric: str
    higher_is_better: bool = False
    curves: pd.DataFrame | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return sort_labels(self.runs.label.unique())

    def to_csv(self, path: str) -> None:
        """The tidy table as CSV, readable back with ``read_runs(path, metric=...)``."""
        out = self.runs.rename(columns={"value": self.metric})
        out.to_csv(path, index=False)


def sort_labels(labels) -> list[str]:
    """FullFT first, then full fine-tuning variants, then LoRA by rank, then the rest."""

    def key(label: str) -> tuple:
        m = re.match(r"r=(\d+(?:\.\d+)?)", label)
        if label == FULLFT_LABEL:
            return (0, 0.0, label)
        if label.startswith("full"):
            return (1, 0.0, label)
        if m:
            return (2, float(m.group(1)), label)
        return (3, 0.0, label)

    return sorted({str(x) for x in labels}, key=key)


def normalise_method(value: object) -> str:
    """'full' for full fine-tuning under any common spelling, 'lora' for LoRA, else as given
    (lower case): a method this package does not know (DoRA, QLoRA) is still a condition."""
    text = str(value).strip().lower()
    if text in FULL_NAMES:
        return "full"
    if text in LORA_NAMES:
        return "lora"
    return text


def _label(row: pd.Series, vary_targets: bool, vary_alpha: bool) -> str:
    targets = row.target_modules if isinstance(row.target_modules, str) else ""
    if row.method == "full":
        return FULLFT_LABEL if not targets else f"full ({targets})"
    head = row.method if row.method != "lora" else ""
    if pd.notna(row["rank"]):
        head = f"{head} r={row['rank']:g}".strip()
    parts = [head or row.method]
    if vary_targets and targets:
        parts.append(targets)
    if vary_alpha and pd.notna(row.alpha):
        parts.append(f"alpha={row.alpha:g}")
    return " ".join(parts)


def _numeric(df: pd.DataFrame, col: str, source: str, positive: bool = False) -> pd.Series:
    """``col`` as floats; text that is not a number is an error naming the rows."""
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() & raw.notna() & ~raw.astype(str).str.strip().str.lower().isin(
        ["nan", "inf", "-inf", "infinity", "-infinity", ""]
    )
    if bad.any():
        rows = ", ".join(f"row {i + 1}: {raw.iloc[i]!r}" for i in np.nonzero(bad.to_numpy())[0][:5])
        raise RunTableError(f"{source}: column {col!r} must hold numbers ({rows})")
    if positive:
        wrong = ~(num > 0) | ~np.isfinite(num)
        if wrong.any():
            rows = ", ".join(f"row {i + 1}: {raw.iloc[i]!r}"
                             for i in np.nonzero(wrong.to_numpy())[0][:5])  # fmt: skip
            raise RunTableError(
                f"{source}: every {col} must be a positive, finite number ({rows})"
            )
    return num.astype(float)


def tidy(
    df: pd.DataFrame,
    metric: str | None = None,
    higher_is_better: bool = False,
    mapping: dict[str, str] | None = None,
    source: str = "input",
    notes: list[str] | None = None,
    curves: pd.DataFrame | None = None,
) -> RunTable:
    """Check a raw table and bring it to :class:`RunTable` form.

    ``mapping`` renames columns (``{"lr": "learning_rate"}``: our name -> the file's).
    A ``step`` column makes each run a curve (the final value is the row at the largest
    step); ``curves`` gives them instead, already tidy. NaN or infinite metrics count as
    diverged runs (an unusable LR), and are counted
    in the notes. Everything that cannot be analysed raises :class:`RunTableError`."""
    notes = list(notes or [])
    if df is None or len(df) == 0:
        raise RunTableError(f"{source}: empty: no runs to analyse")
    mapping = dict(mapping or {})
    missing_src = [src for src in mapping.values() if src not in df.columns]
    if missing_src:
        raise RunTableError(
            f"{source}: --map names columns the file does not have: {', '.join(missing_src)} "
            f"(the file has: {', '.join(map(str, df.columns))})"
        )
    df = df.rename(columns={src: ours for ours, src in mapping.items()})
    if metric is None:
        metric = next((m for m in DEFAULT_METRICS if m in df.columns), None)
    needed = [*REQUIRED, metric or "a metric (--metric NAME)"]
    missing = [c for c in needed if c not in df.columns]
    if metric is None:
        missing[-1] = f"a metric (none of {', '.join(DEFAULT_METRICS)}; name one with --metric)"
    if missing:
        raise RunTableError(
            f"{source}: missing columns: {', '.join(missing)}. Needed: {', '.join(needed)}; "
            f"optional: {', '.join(OPTIONAL)}. The file has: {', '.join(map(str, df.columns))}. "
            "Map other names with --map OURS=THEIRS (e.g. --map lr=learning_rate)."
        )
    out = pd.DataFrame(index=df.index)
    out["method"] = df["method"].map(normalise_method)
    out["rank"] = _numeric(df, "rank", source) if "rank" in df else np.nan
    out.loc[out.method == "full", "rank"] = np.nan
    if "target_modules" in df:
        out["target_modules"] = df["target_modules"].map(
            lambda v: "" if pd.isna(v) else ",".join(v) if isinstance(v, (list, tuple)) else str(v)
        )
    else:
        out["target_modules"] = ""
    out["alpha"] = _numeric(df, "alpha", source) if "alpha" in df else np.nan
    out["lr"] = _numeric(df, "lr", source, positive=True)
    seed = _numeric(df, "seed", source)
    if seed.isna().any() or (seed != seed.round()).any():
        raise RunTableError(f"{source}: every seed must be a whole number")
    out["seed"] = seed.astype(int)
    out["value"] = _numeric(df, metric, source)
    if "step" in df:
        out["step"] = _numeric(df, "step", source)
    flagged = df["diverged"].astype(str).str.lower().isin(["true", "1", "yes"]) \
        if "diverged" in df else pd.Series(False, index=df.index)  # fmt: skip
    out["diverged"] = flagged.to_numpy() | ~np.isfinite(out["value"].to_numpy())
    if "label" in df:
        out["label"] = df["label"].astype(str)
    else:
        lora = out[out.method != "full"]
        vary_t = lora.target_modules.nunique() > 1
        vary_a = lora.alpha.nunique(dropna=True) > 1
        out["label"] = [_label(r, vary_t, vary_a) for _, r in out.iterrows()]
    runs, logged = _split_curves(out, source, notes)
    curves = logged if curves is None else curves
    _check_duplicates(runs, source, notes)
    runs = runs.drop_duplicates(subset=["label", *IDENTITY, "value", "diverged"])
    n_div = int(runs.diverged.sum())
    if n_div:
        where = runs[runs.diverged].groupby("label").size()
        notes.append(
            f"{n_div} run(s) have a NaN/infinite {metric} or are flagged diverged; each counts "
            "as an unusable LR (" + ", ".join(f"{k}: {v}" for k, v in where.items()) + ")"
        )
        runs.loc[runs.diverged, "value"] = np.nan
    runs = runs.sort_values(["label", "lr", "seed"]).reset_index(drop=True)
    return RunTable(runs, metric, higher_is_better, curves, source, notes)


def _keys(df: pd.DataFrame) -> pd.Series:
    """One run-identity number per row (label and :data:`IDENTITY`; NaN matches NaN)."""
    return df.groupby(["label", *IDENTITY], dropna=False, sort=False).ngroup()


def _split_curves(out: pd.DataFrame, source: str, notes: list[str]):
    """With a ``step`` column: the curve of each run and its final row; else no curves."""
    if "step" not in out:
        return out, None
    if out.step.isna().any():
        raise RunTableError(f"{source}: column 'step' has empty cells")
    keyed = out.assign(_k=_keys(out))
    clash = keyed.groupby(["_k", "step"]).value.agg(lambda s: s.round(12).nunique(dropna=False))
    if (clash > 1).any():
        k, step = clash[clash > 1].index[0]
        row = keyed[keyed._k == k].iloc[0]
        raise RunTableError(f"{source}: the same run ({row.label}, lr {row.lr:g}, seed "
                            f"{row.seed}) has two different values at step {step:g}")  # fmt: skip
    last = keyed.sort_values("step", kind="stable").groupby("_k", sort=False).tail(1)
    last = last.assign(diverged=last._k.map(keyed.groupby("_k").diverged.any()))
    curves = out[["label", "lr", "seed", "step", "value"]].sort_values(
        ["label", "lr", "seed", "step"])
    notes.append(f"curves: {keyed._k.nunique()} runs logged at {out.step.nunique()} distinct "
                 "steps; each run's final value is its last logged step")  # fmt: skip
    return last.drop(columns=["step", "_k"]), curves.reset_index(drop=True)


def _check_duplicates(runs: pd.DataFrame, source: str, notes: list[str]) -> None:
    """The same run twice with different values is an error; twice the same, a note."""
    keyed = runs.assign(_k=_keys(runs))
    groups = keyed.groupby("_k")
    values = groups.value.agg(lambda s: s.round(12).nunique(dropna=False))
    clashing = values[values > 1]
    if len(clashing):
        first = keyed[keyed._k == clashing.index[0]]
        row = first.iloc[0]
        rank = "" if pd.isna(row["rank"]) else f", rank {row['rank']:g}"
        raise RunTableError(
            f"{source}: {len(clashing)} run(s) appear twice with different values, e.g. "
            f"{row.method}{rank}, lr {row.lr:g}, seed {row.seed}: "
            f"{', '.join(f'{v:g}' for v in first.value)}. Give each run once (or a distinct seed)."
        )
    twice = int((groups.size() > 1).sum())
    if twice:
        notes.append(f"{twice} run(s) listed twice with the same value; counted once")
