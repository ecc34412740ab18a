"""Tables a reader can read: learning rates in scientific notation, other numbers rounded.

``df.round(3)`` turns a learning rate of 4.64e-4 into 0.0, and a table of optima into a
column of zeros. :func:`readable` is what notebooks show instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd


def is_lr_column(name: object) -> bool:
    """A column that holds learning rates: ``lr``, ``opt_lr``, ``best_lr``, ``lr_at_...``."""
    return isinstance(name, str) and "lr" in name.lower().replace("-", "_").split("_")


def readable(
    df: pd.DataFrame | pd.Series,
    digits: int | Mapping[str, int] = 3,
    lr_columns: Iterable[str] = (),
) -> pd.DataFrame | pd.Series:
    """A copy of ``df`` for display: learning-rate columns (by name, plus ``lr_columns``,
    e.g. the ``lo``/``hi`` of an LR interval) as text in scientific notation, 3 significant
    digits; every other float column rounded to ``digits`` (an int, or per column)."""
    if isinstance(df, pd.Series):
        return readable(df.to_frame(), digits, lr_columns).iloc[:, 0]
    out = df.copy()
    extra = set(lr_columns)
    for col in out.columns:
        if is_lr_column(col) or col in extra:
            out[col] = out[col].map(lambda v: "—" if pd.isna(v) else f"{float(v):.2e}")
        elif pd.api.types.is_float_dtype(out[col]):
            n = digits.get(col, 3) if isinstance(digits, Mapping) else digits
            out[col] = out[col].round(n)
    return out
