"""``lora-lab grade``: collect the exercise outcomes that executed notebooks recorded.

Every checker in :mod:`lora_lab.exercises` emits its outcome inside the notebook (a display
output with a lora_lab MIME type, beside the hint the student reads). A course collects the
students' executed notebooks (nbgrader's ``submitted/`` folders, an LMS download, the
notebooks ``lora-lab reproduce`` executed) and gets one row per notebook and exercise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from lora_lab.exercises import EXERCISE_MIME

CHECK_CALL = re.compile(r"^\s*(?:\w+\s*=\s*)?check_(\w+)\(")
COLUMNS = ["student", "notebook", "exercise", "outcome", "message", "path"]


def outcomes(nb: dict[str, Any]) -> list[dict[str, str]]:
    """The outcomes a notebook recorded, in order (the last of a repeated exercise wins in
    :func:`grade_notebooks`)."""
    found = []
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            payload = output.get("data", {}).get(EXERCISE_MIME)
            if isinstance(payload, str):
                payload = json.loads(payload)
            if isinstance(payload, dict) and "exercise" in payload:
                found.append(payload)
    return found


def expected(nb: dict[str, Any]) -> list[str]:
    """The exercises a notebook asks for: the checkers its code cells call for the student
    (``check_X(my_fn)`` at the start of a line; quiet self-checks are not exercises)."""
    names: list[str] = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for line in "".join(cell.get("source", "")).splitlines():
            m = CHECK_CALL.match(line)
            if m and "quiet=True" not in line and m.group(1) not in names:
                names.append(m.group(1))
    return names


def _notebook_paths(paths: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no notebook or folder at {p}")
    if not found:
        raise FileNotFoundError(f"no .ipynb files in {', '.join(map(str, paths))}")
    return found


def grade_notebooks(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (notebook, exercise): ``outcome`` is passed, failed, not attempted (the
    stub still raises NotImplementedError) or not run (the checker's cell has no recorded
    outcome: not executed, or stopped by an earlier error). ``student`` is the notebook's
    folder name when the notebooks sit in one folder per student, else its file stem."""
    paths = _notebook_paths(paths)
    parents = {p.parent for p in paths}
    rows = []
    for path in paths:
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a readable notebook ({e})") from None
        got = {o["exercise"]: o for o in outcomes(nb)}
        student = path.parent.name if len(parents) == len(paths) > 1 else path.stem
        for exercise in expected(nb) + [e for e in got if e not in expected(nb)]:
            o = got.get(exercise, {"outcome": "not run", "message": ""})
            rows.append({"student": student, "notebook": path.name, "exercise": exercise,
                         "outcome": o["outcome"], "message": o["message"],
                         "path": str(path)})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)
