"""Papermill harness for tests: execute a notebook headless and return its records."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from lora_lab.records import read_records
from lora_lab.reproduce import execute_notebook

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(
    path: str | Path,
    tmp_dir: str | Path,
    parameters: dict[str, Any] | None = None,
    timeout: int = 900,
) -> dict[str, Any]:
    """Execute ``path`` with ``parameters`` (kernel python3, Agg) into ``tmp_dir``; records."""
    os.environ["MPLBACKEND"] = "Agg"
    out = Path(tmp_dir) / Path(path).name
    execute_notebook(path, out, parameters, timeout=timeout, cwd=Path(path).parent)
    return read_records(out)


# ----------------------------------------------------------------------------- printed verdicts
# "same" is fine as an adjective of a design ("the same seeds", "at the same rank"), never as
# a verdict; a verdict word must be followed by its interval (or its margin) close by.
_SAME_AS_DESIGN = re.compile(
    r"\bsame\s+(rank|matrices|problems|start|seeds?|lrs?|learning rates?|data|batch(es)?|"
    r"examples?|schedule|model|base|task|held-out|steps?|number|budget|shape|scale|width|"
    r"order|one|code|dataset|grid|design|inputs?|tokens?|split|points?)\b",
    re.IGNORECASE,
)
_VERDICT = re.compile(r"\b(better|worse|not resolved|equivalent within)\b")
_EVIDENCE = re.compile(r"\[|unbounded|inside ±|margin ±")


def verdict_problems(text: str, window: int = 250) -> list[str]:
    """Places in ``text`` where "same" is used as a verdict, or a verdict word (better,
    worse, equivalent within, not resolved) has no interval or margin within ``window``
    characters after it (or, in a Markdown table row, anywhere in that row)."""
    problems = []
    for m in re.finditer(r"\bsame\b", text, re.IGNORECASE):
        if not _SAME_AS_DESIGN.match(text, m.start()):
            problems.append(
                f"'same' as a verdict: ...{text[max(0, m.start() - 60) : m.end() + 40]!r}"
            )
    for m in _VERDICT.finditer(text):
        start, end = text.rfind("\n", 0, m.start()) + 1, text.find("\n", m.end())
        line = text[start:] if end < 0 else text[start:end]
        if line.startswith("|") and _EVIDENCE.search(line):
            continue  # a table row: its interval sits in another cell of the same row
        if not _EVIDENCE.search(text, m.end(), m.end() + window):
            problems.append(
                f"verdict without interval: ...{text[max(0, m.start() - 80) : m.end() + 60]!r}"
            )
    return problems


def printed_text(notebook: str | Path) -> str:
    """Everything an executed notebook printed (stream outputs of its code cells)."""
    import json

    cells = json.loads(Path(notebook).read_text())["cells"]
    return "\n".join(
        "".join(o.get("text", ""))
        for c in cells
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )


def expected_verdict(row, subject: str) -> str:
    """The verdict a table row's own interval and margin imply (``lo``, ``hi``, ``eq_lo``,
    ``eq_hi``, ``margin`` as :func:`lora_lab.findings.common.verdict_columns` writes them)."""
    if row.lo > 0:
        return f"{subject} worse"
    if row.hi < 0:
        return f"{subject} better"
    if -row.margin <= row.eq_lo and row.eq_hi <= row.margin:
        return f"equivalent within ±{row.margin:.3g}"
    return "not resolved"
