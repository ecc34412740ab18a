"""Papermill harness for tests: execute a notebook headless and return its records."""

from __future__ import annotations

import os
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
