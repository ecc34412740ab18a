"""Notebook records: values a notebook claims, machine-readable after execution.

``record(name, value)`` shows the value to the reader *and* emits it as a JSON output with
a custom MIME type; ``read_records(path)`` collects them from an executed notebook, so tests
check what the notebook actually computed rather than re-deriving it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MIME = "application/vnd.lora-lab.record+json"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def record(name: str, value: Any, fmt: str | None = None) -> None:
    """Display ``name = value`` and emit it as a record (returns None, so a cell ending in
    ``record(...)`` does not show the value twice)."""
    from IPython.display import display

    clean = _jsonable(value)
    json.dumps(clean)  # fail loudly here, not at read time
    shown = format(value, fmt) if fmt and isinstance(value, (int, float)) else repr(clean)
    display({MIME: {"name": name, "value": clean}, "text/plain": f"{name} = {shown}"}, raw=True)


def read_records(path: str | Path) -> dict[str, Any]:
    """All records of an executed notebook, by name (the last one wins on repeats)."""
    nb = json.loads(Path(path).read_text())
    out: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if MIME in data:
                rec = data[MIME]
                if isinstance(rec, str):
                    rec = json.loads(rec)
                out[rec["name"]] = rec["value"]
    return out
