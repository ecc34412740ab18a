"""Results store: one JSON record per finished run, written atomically, keyed by spec hash.

A record holds the run's spec, its :class:`~lora_lab.training.RunResult` and provenance
(versions, git commit, machine, date). Records are written to a temporary file and renamed,
so a reader never sees half a record and a killed sweep loses at most the runs in flight.
A record that cannot be read (truncated or hand-edited) is reported and treated as missing,
so the next sweep redoes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch


def spec_hash(spec: dict[str, Any]) -> str:
    """Stable 12-hex-digit key of a run spec (same spec, same key, in every process)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "lora_lab"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# What every run record says about how it was produced (see provenance()).
PROVENANCE_FIELDS = (
    "lora_lab_version",
    "git_commit",
    "torch_version",
    "python_version",
    "cpu",
    "cuda",
    "torch_threads",
    "date",
)


def provenance() -> dict[str, Any]:
    """How and where a result was produced."""
    from lora_lab import __version__

    return {
        "lora_lab_version": __version__,
        "git_commit": _git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "cpu": _cpu_model(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    """A folder of run records: ``<folder>/<spec hash>.json``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def write(self, key: str, record: dict[str, Any]) -> None:
        write_json_atomic(self.path(key), record)

    def read(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(key).read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def scan(self) -> tuple[dict[str, dict[str, Any]], list[Path]]:
        """(readable records by key, unreadable files). Unreadable ones are reported."""
        good: dict[str, dict[str, Any]] = {}
        bad: list[Path] = []
        if not self.folder.exists():
            return good, bad
        for p in sorted(self.folder.glob("*.json")):
            if p.name.startswith(".tmp-"):
                continue
            try:
                rec = json.loads(p.read_text())
                if not isinstance(rec, dict) or "spec" not in rec or "result" not in rec:
                    raise ValueError("not a run record")
                good[p.stem] = rec
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
                bad.append(p)
                warnings.warn(
                    f"unreadable result record {p} ({e}); it will be redone", stacklevel=2
                )
        return good, bad

    def done_keys(self) -> set[str]:
        return set(self.scan()[0])
