"""Results store: one JSON record per finished run, written atomically, keyed by spec key.

A record holds the run's spec, its :class:`~lora_lab.training.RunResult` and provenance
(versions, git commit, machine, threads, date). Records are written to a temporary file and
renamed, so a reader never sees half a record and a killed sweep loses at most the runs in
flight. Records are validated when read: one that cannot be read, lacks its result or does
not belong under its key is reported and treated as missing, so the next sweep redoes it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from lora_lab._version import __version__
from lora_lab.paths import user_mirror
from lora_lab.sweeps.identity import CODE
from lora_lab.sweeps.spec import RunSpec


@lru_cache(maxsize=1)
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
    "source_hash",
    "spec_format",
    "torch_version",
    "python_version",
    "cpu",
    "cuda",
    "torch_threads",
    "date",
)


def provenance() -> dict[str, Any]:
    """How and where a result was produced. The code's identity (version, commit, content
    hash of the source, spec format) is the one this process imported, not what the checkout
    holds when the record is written (:mod:`lora_lab.sweeps.identity`)."""
    return {
        "lora_lab_version": __version__,
        "git_commit": CODE.git_commit,
        "source_hash": CODE.source_hash,
        "spec_format": CODE.spec_format,
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


def validate_record(key: str, rec: Any) -> dict[str, Any]:
    """``rec`` if it is a complete record of a run whose spec has key ``key``; else
    ``ValueError`` saying what is wrong."""
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    for part in ("spec", "result", "provenance"):
        if not isinstance(rec.get(part), dict):
            raise ValueError(f"no {part}")
    spec = RunSpec.from_dict(rec["spec"])
    if spec.key != key:
        raise ValueError(
            f"its spec has key {spec.key}, not {key} (written by an older lora_lab? "
            "run `lora-lab migrate FOLDER`)"
        )
    res = rec["result"]
    missing = [k for k in RESULT_FIELDS if k not in res]
    if missing:
        raise ValueError(f"result lacks {missing}")
    if not isinstance(res["curves"], dict) or "eval_loss" not in res["curves"]:
        raise ValueError("result curves lack eval_loss")
    final = res["final"]
    if not isinstance(final, dict) or not isinstance(final.get("eval_loss"), (int, float)):
        raise ValueError("result final lacks eval_loss")
    if not res["diverged"] and not math.isfinite(final["eval_loss"]):
        raise ValueError("a run that did not diverge has a non-finite final loss")
    return rec


RESULT_FIELDS = ("config", "curves", "final", "trainable_params", "wall_time_s", "diverged")


class ResultStore:
    """A folder of run records: ``<folder>/<spec key>.json``.

    Where the folder is a shipped one and the shipped data is read-only (an installed
    package, :func:`lora_lab.paths.shipped_read_only`), new records go to the user's mirror
    of it and reading sees both: the shipped records under the user's own (which win)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.shipped: Path | None = None
        mirror = user_mirror(self.folder)
        if mirror is not None:
            self.shipped, self.folder = self.folder, mirror

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def write(self, key: str, record: dict[str, Any]) -> None:
        validate_record(key, record)
        write_json_atomic(self.path(key), record)

    def read(self, key: str) -> dict[str, Any] | None:
        """The valid record under ``key``, or None."""
        for path in self._layers(key):
            try:
                return validate_record(key, json.loads(path.read_text()))
            except FileNotFoundError:
                continue
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
                return None
        return None

    def _layers(self, key: str) -> list[Path]:
        shipped = [self.shipped / f"{key}.json"] if self.shipped is not None else []
        return [self.path(key), *shipped]

    def scan(self, warn: bool = True) -> tuple[dict[str, dict[str, Any]], list[Path]]:
        """(valid records by key, invalid files). Invalid ones are reported (a warning that
        says why) and will be redone by the next sweep."""
        good: dict[str, dict[str, Any]] = {}
        bad: list[Path] = []
        if self.shipped is not None:  # read-only: an unreadable shipped file is reported only
            shipped, _ = ResultStore._plain(self.shipped).scan(warn)
            good.update(shipped)
        if not self.folder.exists():
            return good, bad
        for p in sorted(self.folder.glob("*.json")):
            if p.name.startswith(".tmp-"):  # a write in flight
                continue
            try:
                good[p.stem] = validate_record(p.stem, json.loads(p.read_text()))
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
                bad.append(p)
                if warn:
                    warnings.warn(
                        f"unreadable result record {p} ({e}); it will be redone", stacklevel=2
                    )
        return good, bad

    @classmethod
    def _plain(cls, folder: Path) -> ResultStore:
        store = cls.__new__(cls)
        store.folder, store.shipped = Path(folder), None
        return store

    def done_keys(self) -> set[str]:
        return set(self.scan()[0])
