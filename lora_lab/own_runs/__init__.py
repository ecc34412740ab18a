"""Analyse your own runs: the package's best-over-LR machinery on sweeps made anywhere.

``lora-lab analyze PATH`` (or :func:`analyze` from Python) reads a CSV / JSON Lines table, a
folder of Hugging Face Trainer outputs, a W&B export or a lora_lab results folder, and says
per method whether its best LR is an optimum, the LR ratio to FullFT with its interval, the
gap to FullFT as one of the four verdicts, and which LRs to run next.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lora_lab.own_runs.analysis import Analysis, analyze_table
from lora_lab.own_runs.importers import FORMATS, detect_format, read_runs
from lora_lab.own_runs.report import html_report, markdown_report, write_report
from lora_lab.own_runs.table import RunTable, RunTableError, tidy


def analyze(
    source: RunTable | str | Path | Iterable[str | Path],
    fmt: str = "auto",
    metric: str | None = None,
    higher_is_better: bool = False,
    mapping: dict[str, str] | None = None,
    pattern: str | None = None,
    reference: str | None = None,
    margin: float | None = None,
) -> Analysis:
    """Read ``source`` (a run table, or paths as :func:`read_runs` takes them) and analyse
    it against ``reference`` (default FullFT) with equivalence ``margin`` (metric units).
    The returned :class:`Analysis` holds the tables the report shows (``optima``,
    ``ratios``, ``gaps``, ``next_runs``, ``curves``) and renders itself
    (``to_markdown()``, ``to_html()``; :func:`write_report` writes both)."""
    table = source if isinstance(source, RunTable) else read_runs(
        source, fmt, metric, higher_is_better, mapping, pattern
    )  # fmt: skip
    return analyze_table(table, reference, margin)


__all__ = [
    "FORMATS",
    "Analysis",
    "RunTable",
    "RunTableError",
    "analyze",
    "analyze_table",
    "detect_format",
    "html_report",
    "markdown_report",
    "read_runs",
    "tidy",
    "write_report",
]
