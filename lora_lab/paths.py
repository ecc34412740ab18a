"""Where lora_lab's files live, found the same way in a checkout, an installed wheel and a
remote worker.

Package data (pretrained bases, shipped sweep records, task samples) sits *inside* the
package, ``lora_lab/data/``, so ``pip install`` carries it and every Ray worker that can
import lora_lab can also load a base. Scratch output (quick ``ci`` sweeps, reports) goes to
``reports/`` in a checkout and to the user's cache folder otherwise, never into
site-packages.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir() -> Path:
    """Package data (``bases``, ``results``, ``samples``); ``LORA_LAB_DATA`` overrides."""
    env = os.environ.get("LORA_LAB_DATA")
    return Path(env) if env else PACKAGE_DIR / "data"


def checkout_root() -> Path | None:
    """The source checkout lora_lab runs from (a folder with ``pyproject.toml`` beside the
    package), or None for an installed wheel."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").exists() else None


def work_dir() -> Path:
    """Where scratch output goes: ``LORA_LAB_WORK``, else ``<checkout>/reports``, else
    ``$XDG_CACHE_HOME/lora_lab`` (``~/.cache/lora_lab``)."""
    env = os.environ.get("LORA_LAB_WORK")
    if env:
        return Path(env)
    root = checkout_root()
    if root is not None:
        return root / "reports"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lora_lab"


def base_path(preset: str) -> Path:
    """Weights of the shipped pretrained base ``preset`` (``.json`` beside it)."""
    return data_dir() / "base" / f"{preset}.safetensors"


def benchmark_record(name: str = "step_time") -> Path:
    """A shipped benchmark record (``benchmarks/step_time.py`` writes ``step_time``)."""
    return data_dir() / "benchmarks" / f"{name}.json"


def results_root() -> Path:
    """Shipped sweep records: ``<data>/results/<experiment>/<key>.json``."""
    return data_dir() / "results"


def notebooks_dir() -> Path:
    """The notebooks of a checkout (they are not part of the installed package)."""
    root = checkout_root()
    if root is None or not (root / "notebooks").is_dir():
        raise FileNotFoundError(
            "the notebooks ship with the source checkout, not the installed package; "
            "clone the repository or pass the notebook paths explicitly"
        )
    return root / "notebooks"
