"""Which code a process runs, fixed when the process imports the engine.

A record must name the code that produced it, and a worker must run the code its driver
runs. Both are read *once*, at import: the package version, the spec format (the fields and
defaults of :class:`~lora_lab.sweeps.spec.RunSpec`), a content hash of every ``.py`` file of
the package as it was imported (so an uncommitted edit still identifies its code exactly),
and the git commit of a source checkout, ``-dirty`` when ``lora_lab/`` differed from it.
Reading the commit when a record is *written* instead would name whatever the tree holds
hours later, not the code that ran.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import asdict, dataclass

from lora_lab._version import __version__
from lora_lab.paths import PACKAGE_DIR, checkout_root
from lora_lab.sweeps.spec import _DEFAULTS, RunSpec, spec_hash


def source_hash() -> str:
    """SHA-256 (16 hex digits) over every ``.py`` file of the package, path and bytes."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0" + path.read_bytes() + b"\1")
    return h.hexdigest()[:16]


def spec_format() -> str:
    """A hash of RunSpec's stored fields and their defaults: changes when the format does."""
    return spec_hash({"fields": list(RunSpec.field_names()), "defaults": _DEFAULTS})


def git_commit() -> str | None:
    """HEAD of the source checkout, ``-dirty`` when tracked files under ``lora_lab/`` differ
    from it; None outside a checkout or without git."""
    root = checkout_root()
    if root is None:
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5)  # fmt: skip
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "lora_lab"],
            cwd=root, capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class CodeIdentity:
    lora_lab_version: str
    spec_format: str
    source_hash: str
    git_commit: str | None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def mismatch(self, other: dict[str, str | None]) -> str | None:
        """Why a process with identity ``other`` must not run work for this one (None: it
        may). The commit alone may differ (a checkout moved on without code changes)."""
        for name in ("lora_lab_version", "spec_format", "source_hash"):
            if other.get(name) != getattr(self, name):
                return (f"{name} differs: this process runs {getattr(self, name)!r}, the other "
                        f"{other.get(name)!r}")  # fmt: skip
        return None


CODE = CodeIdentity(__version__, spec_format(), source_hash(), git_commit())
