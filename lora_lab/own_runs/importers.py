"""Readers that bring a sweep made anywhere into one :class:`~lora_lab.own_runs.table.RunTable`.

Formats: a CSV / JSON Lines table (columns mappable), a folder of Hugging Face Trainer output
directories (``trainer_state.json``, PEFT's ``adapter_config.json``, the rest from a pattern
over folder names), a W&B runs export (a CSV with config and summary columns) and lora_lab's
own result folders. Each reader returns raw columns; :func:`~lora_lab.own_runs.table.tidy`
checks them all the same way.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from lora_lab.analysis import load_curves, load_runs
from lora_lab.own_runs.table import RunTable, RunTableError, tidy

FORMATS = ("auto", "csv", "jsonl", "wandb", "trainer", "lora_lab")
# spec fields of lora_lab's own records that, when they vary in one folder, name a condition
_CONDITION_FIELDS = ("base", "task", "batch_size", "steps", "warmup_steps", "objective")


def read_runs(
    paths: str | Path | Iterable[str | Path],
    fmt: str = "auto",
    metric: str | None = None,
    higher_is_better: bool = False,
    mapping: dict[str, str] | None = None,
    pattern: str | None = None,
) -> RunTable:
    """Read one or more sources (all of one format) into a checked run table.

    ``fmt`` is one of :data:`FORMATS`; ``auto`` tells a lora_lab results folder, a folder of
    Trainer outputs, a ``.csv`` and a ``.jsonl`` apart (a W&B export needs ``wandb``).
    ``mapping`` renames columns (ours -> the file's), ``pattern`` is a regular expression
    with named groups (``method``, ``rank``, ``lr``, ``seed``, ...) matched against Trainer
    folder names. ``metric`` is the column (or logged key) to compare, lower is better unless
    ``higher_is_better``."""
    if fmt not in FORMATS:
        raise RunTableError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise RunTableError("no input given: name a file or folder of runs")
    frames, curve_frames, notes = [], [], []
    for path in paths:
        if not path.exists():
            raise RunTableError(f"{path}: no such file or folder")
        kind = detect_format(path) if fmt == "auto" else fmt
        if kind == "lora_lab":
            metric = metric or "eval_loss"
            runs, curves = _read_lora_lab(path, metric)
            curve_frames.append(curves)
        elif kind == "trainer":
            metric = metric or "eval_loss"
            runs = _read_trainer(path, metric, pattern, notes)
        elif kind == "wandb":
            runs = _read_wandb(path, notes)
        else:
            runs = _read_table(path, kind)
        frames.append(runs)
    raw = pd.concat(frames, ignore_index=True)
    source = ", ".join(str(p) for p in paths)
    curves = pd.concat(curve_frames, ignore_index=True) if curve_frames else None
    table = tidy(raw, metric, higher_is_better, mapping, source, notes, curves)
    return table


def detect_format(path: Path) -> str:
    """What a path holds, from its shape (see :data:`FORMATS`)."""
    if path.is_dir():
        if any(_is_lora_lab_record(p) for p in sorted(path.glob("*.json"))[:5]):
            return "lora_lab"
        if next(path.rglob("trainer_state.json"), None) is not None:
            return "trainer"
        raise RunTableError(
            f"{path}: a folder with neither lora_lab run records (*.json) nor Hugging Face "
            "Trainer outputs (trainer_state.json in it or its subfolders)"
        )
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise RunTableError(f"{path}: cannot tell the format from {suffix!r}; give --format")


def _is_lora_lab_record(path: Path) -> bool:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and "spec" in rec and "result" in rec


# ----------------------------------------------------------------------------- tables


def _read_table(path: Path, kind: str) -> pd.DataFrame:
    """A CSV (``#`` starts a comment line) or JSON Lines table, one row per run (or per run
    and step)."""
    try:
        if kind == "jsonl":
            text = path.read_text()
            if not text.strip():
                raise RunTableError(f"{path}: empty: no runs to analyse")
            if text.lstrip().startswith("["):  # a JSON array of rows
                return pd.DataFrame(json.loads(text))
            return pd.read_json(path, lines=True)
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return pd.read_csv(path, sep=sep, comment="#", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise RunTableError(f"{path}: empty: no runs to analyse") from None
    except (ValueError, pd.errors.ParserError) as e:
        raise RunTableError(f"{path}: not a readable {kind} table ({e})") from None


def _read_wandb(path: Path, notes: list[str]) -> pd.DataFrame:
    """A W&B runs export: one row per run, config and summary as columns (the web UI's CSV)
    or as dict-valued ``config`` / ``summary`` columns (the API's). Only finished runs are
    kept; the others are counted in the notes."""
    df = _read_table(path, "csv" if path.suffix.lower() != ".jsonl" else "jsonl")
    for col in ("config", "summary"):
        if col in df:
            flat = pd.DataFrame([_as_dict(v) for v in df[col]], index=df.index)
            flat = flat.drop(columns=[c for c in flat if c in df])
            df = pd.concat([df.drop(columns=col), flat], axis=1)
    if "State" in df or "state" in df:
        state = (df["State"] if "State" in df else df["state"]).astype(str).str.lower()
        unfinished = state != "finished"
        if unfinished.any():
            counts = state[unfinished].value_counts()
            notes.append("W&B: left out " + ", ".join(f"{n} {s}" for s, n in counts.items())
                         + " run(s); only finished runs are analysed")  # fmt: skip
            df = df[~unfinished]
    return df.reset_index(drop=True)


def _as_dict(value: object) -> dict:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.strip():
        return {}
    for parse in (json.loads, ast.literal_eval):
        try:
            out = parse(value)
            return out if isinstance(out, dict) else {}
        except (ValueError, SyntaxError):
            continue
    return {}


# ----------------------------------------------------------------------------- Trainer


def _run_folders(root: Path) -> list[Path]:
    """Each Trainer output directory under ``root``: the folder itself if it holds a
    ``trainer_state.json``, else each subfolder that has one (directly or in a checkpoint)."""
    if (root / "trainer_state.json").exists():
        return [root]
    found = sorted({p.parent for p in root.rglob("trainer_state.json")})
    runs = {}
    for folder in found:
        top = folder.parent if re.fullmatch(r"checkpoint-\d+", folder.name) else folder
        runs.setdefault(top, folder)
    return sorted(runs)


def _state_file(run: Path) -> Path:
    """The run's final state: its own trainer_state.json, else its latest checkpoint's."""
    if (run / "trainer_state.json").exists():
        return run / "trainer_state.json"
    checkpoints = sorted(run.glob("checkpoint-*/trainer_state.json"),
                         key=lambda p: int(p.parent.name.split("-")[1]))  # fmt: skip
    return checkpoints[-1]


def _read_trainer(root: Path, metric: str, pattern: str | None, notes: list[str]) -> pd.DataFrame:
    """One row per (run, logged step) from ``log_history``: the metric's curve, whose last
    step is the final value. Rank, alpha and targets from PEFT's ``adapter_config.json``
    (method lora); everything else from ``pattern``'s named groups over the folder name."""
    folders = _run_folders(root)
    if not folders:
        raise RunTableError(f"{root}: no trainer_state.json in this folder or its subfolders")
    regex = None
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise RunTableError(f"--pattern is not a valid regular expression: {e}") from None
    rows, unmatched = [], []
    for run in folders:
        name = str(run.relative_to(root)) if run != root else run.name
        fields: dict[str, object] = {}
        if regex is not None:
            m = regex.search(name)
            if m is None:
                unmatched.append(name)
                continue
            fields.update({k: v for k, v in m.groupdict().items() if v is not None})
        adapter = run / "adapter_config.json"
        if adapter.exists():
            cfg = json.loads(adapter.read_text())
            fields.setdefault("method", "lora")
            fields.setdefault("rank", cfg.get("r"))
            fields.setdefault("alpha", cfg.get("lora_alpha"))
            targets = cfg.get("target_modules")
            if targets is not None:
                fields.setdefault("target_modules", ",".join(sorted(targets))
                                  if isinstance(targets, list) else str(targets))  # fmt: skip
        state = json.loads(_state_file(run).read_text())
        history = state.get("log_history", [])
        if "lr" not in fields:
            lrs = [h["learning_rate"] for h in history if "learning_rate" in h]
            if lrs:
                fields["lr"] = max(lrs)
                notes.append(f"{name}: no lr in the folder name; used the peak logged "
                             "learning_rate")  # fmt: skip
        fields.setdefault("method", "full")
        if "seed" not in fields:
            fields["seed"] = 0
        logged = [h for h in history if metric in h]
        if not logged:
            keys = sorted({k for h in history for k in h})
            raise RunTableError(
                f"{name}: trainer_state.json logs no {metric!r} (it logs: "
                f"{', '.join(keys) or 'nothing'}); choose one with --metric"
            )
        for h in logged:
            rows.append({**fields, "step": h.get("step", np.nan), metric: h[metric],
                         "run": name})  # fmt: skip
    if regex is not None and not rows:
        raise RunTableError(
            f"--pattern matched none of the {len(folders)} run folders in {root} (e.g. "
            + ", ".join(repr(u) for u in unmatched[:3]) + ")"
        )
    if unmatched:
        notes.append(f"{len(unmatched)} folder(s) did not match --pattern and were left out: "
                     + ", ".join(unmatched[:5]))  # fmt: skip
    if pattern is None or "seed" not in (regex.groupindex if regex else {}):
        notes.append("no seed in the folder names: every run counts as seed 0 (one seed)")
    return pd.DataFrame(rows).drop(columns="run")


# ----------------------------------------------------------------------------- lora_lab


def _read_lora_lab(folder: Path, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A lora_lab results folder: runs (final metric) and curves, labelled as the notebooks
    label them; spec fields that vary in the folder (batch size, base, ...) join the label."""
    runs = load_runs(folder)
    column = "final_loss" if metric == "eval_loss" else metric
    if column not in runs:
        finals = [c for c in runs if c not in ("train_loss",) and runs[c].dtype.kind == "f"]
        raise RunTableError(f"{folder}: the records have no final {metric!r} "
                            f"(numeric columns: {', '.join(finals)})")  # fmt: skip
    extra = [c for c in _CONDITION_FIELDS if c in runs and runs[c].nunique(dropna=False) > 1]
    label = runs.label.astype(str)
    for c in extra:
        label = label + f", {c}=" + runs[c].astype(str)
    out = pd.DataFrame({"label": label, "method": runs.method, "rank": runs.r,
                        "target_modules": runs.target_modules, "alpha": runs.get("lora_alpha"),
                        "lr": runs.lr, "seed": runs.seed, metric: runs[column],
                        "diverged": runs.diverged})  # fmt: skip
    curves = load_curves(folder)
    if metric in curves:
        keyed = dict(zip(runs.key, label))
        curves = pd.DataFrame({"label": curves.key.map(keyed), "lr": curves.lr,
                               "seed": curves.seed, "step": curves.step,
                               "value": curves[metric]})  # fmt: skip
    else:
        curves = pd.DataFrame(columns=["label", "lr", "seed", "step", "value"])
    return out, curves

