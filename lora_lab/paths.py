"""Where lora_lab's files live, found the same way in a checkout, an editable install, an
installed wheel and a Ray worker.

Package data (pretrained bases, shipped sweep records, task samples, benchmark records)
lives in ``data/`` at the top of a source checkout, beside ``lora_lab/``, ``notebooks/``
and ``tests/``. A wheel carries it inside the package (``lora_lab/data``, mapped at build
time, as the notebooks are mapped to ``lora_lab/notebooks``), so every process that can
import lora_lab can load a base. Only this module knows the two layouts.

What lora_lab *writes* (sweep records, pretrained bases, reports) goes to the user's work
folder: ``reports/`` in a checkout, ``$XDG_CACHE_HOME/lora_lab`` otherwise (per user, so a
shared JupyterHub never writes into site-packages). Shipped records stay read-only there: a
sweep in an installed package writes its new records beside the user's own and reads the
shipped ones too (:func:`user_mirror`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
READ_ONLY_ENV = "LORA_LAB_READ_ONLY_DATA"  # "1": behave as an installed package (tests, hubs)


def checkout_root() -> Path | None:
    """The source checkout lora_lab runs from (a folder with ``pyproject.toml`` and
    ``data/`` beside the package), or None for an installed wheel."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").exists() and (root / "data").is_dir() else None


def data_dir() -> Path:
    """Package data (``base``, ``results``, ``samples``, ``benchmarks``): ``LORA_LAB_DATA``,
    else the checkout's ``data/``, else the installed package's ``lora_lab/data``."""
    env = os.environ.get("LORA_LAB_DATA")
    if env:
        return Path(env)
    root = checkout_root()
    return root / "data" if root is not None else PACKAGE_DIR / "data"


def shipped_read_only() -> bool:
    """Whether the shipped data must not be written: an installed package (site-packages, a
    hub's shared environment), or ``LORA_LAB_READ_ONLY_DATA=1``."""
    return checkout_root() is None or os.environ.get(READ_ONLY_ENV, "") not in ("", "0")


def work_dir() -> Path:
    """Where output goes: ``LORA_LAB_WORK``, else ``<checkout>/reports``, else
    ``$XDG_CACHE_HOME/lora_lab`` (``~/.cache/lora_lab``), which is per user."""
    env = os.environ.get("LORA_LAB_WORK")
    if env:
        return Path(env)
    root = checkout_root()
    if root is not None and not shipped_read_only():
        return root / "reports"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lora_lab"


def reports_dir() -> Path:
    """Where ``lora-lab reproduce`` writes executed notebooks and their index."""
    root = checkout_root()
    if root is not None and not shipped_read_only() and "LORA_LAB_WORK" not in os.environ:
        return root / "reports"
    return work_dir() / "reports"


def base_path(preset: str) -> Path:
    """Weights of the shipped pretrained base ``preset`` (``.json`` beside it)."""
    return data_dir() / "base" / f"{preset}.safetensors"


def warm_start_path(name: str) -> Path:
    """A shipped warm start's weights (``.json`` with its recipe beside them)."""
    return data_dir() / "warm_starts" / f"{name}.safetensors"


def benchmark_record(name: str = "step_time") -> Path:
    """A shipped benchmark record (``benchmarks/step_time.py`` writes ``step_time``)."""
    return data_dir() / "benchmarks" / f"{name}.json"


def results_root() -> Path:
    """Shipped sweep records: ``<data>/results/<experiment>/<key>.json``."""
    return data_dir() / "results"


def user_results_root() -> Path:
    """A user's own records of the shipped experiments, where the shipped ones are read-only."""
    return work_dir() / "results-own"


def user_mirror(folder: str | Path) -> Path | None:
    """Where records for the shipped results folder ``folder`` are written when the shipped
    data is read-only (None when it is writable, or ``folder`` is not a shipped one)."""
    if not shipped_read_only():
        return None
    try:
        relative = Path(folder).resolve().relative_to(results_root().resolve())
    except ValueError:
        return None
    return user_results_root() / relative


def notebooks_dir() -> Path:
    """The notebooks: a checkout's ``notebooks/``, or the copy inside an installed package
    (``lora-lab notebooks DEST`` copies them somewhere writable)."""
    root = PACKAGE_DIR.parent
    for folder in (root / "notebooks", PACKAGE_DIR / "notebooks"):
        if folder.is_dir() and any(folder.glob("*.ipynb")):
            return folder
    raise FileNotFoundError(
        "no notebooks found beside lora_lab or inside it; reinstall lora_lab, or clone the "
        "repository and open its notebooks/"
    )


def copy_notebooks(dest: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy every notebook into ``dest`` (created if missing); an existing notebook is kept
    (it may hold a student's work) unless ``overwrite``. Returns the copies made."""
    dest = Path(dest)
    sources = sorted(notebooks_dir().glob("*.ipynb"))
    clash = [p.name for p in sources if (dest / p.name).exists()]
    if clash and not overwrite:
        raise FileExistsError(
            f"{dest} already holds {', '.join(clash)}; pass --overwrite to replace them "
            "(a student's edits would be lost)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for p in sources:
        shutil.copy2(p, dest / p.name)
        copied.append(dest / p.name)
    return copied
