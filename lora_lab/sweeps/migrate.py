"""One-off migration of run records written before typed specs (lora_lab < 0.2).

Old records were keyed by a hash of the spec dict exactly as a grid wrote it, defaults
sometimes spelled out and sometimes not. Typed specs key a record by its canonical form
(defaults left out), so the same run now has a different key. :func:`migrate_store` renames
each old record to its new key, stores the complete typed spec, and keeps the old key and
spec under ``migrated_from`` so nothing about how it was produced is lost. The result and
provenance are not touched.

Records already under their key but stored in an older *form* (written before a field with a
default existed: ``objective``, ``lora_layer``) get their stored spec rewritten to today's
complete form, so every record of a folder reads the same way; the key, result and
provenance stay as they were.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lora_lab.sweeps.spec import RunSpec, spec_hash
from lora_lab.sweeps.store import write_json_atomic

NOTE = (
    "re-keyed by lora_lab 0.2 (typed run specs: the key hashes the canonical spec, defaults "
    "left out); result and provenance unchanged"
)


def migrate_store(folder: str | Path, dry_run: bool = False) -> dict[str, str]:
    """Re-key every old record in ``folder``; returns ``{old key: new key}`` (a record only
    rewritten to the complete stored form maps to its own key). Unreadable files raise."""
    folder = Path(folder)
    moved: dict[str, str] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(".tmp-"):
            continue
        rec = json.loads(path.read_text())
        spec = RunSpec.from_dict(rec["spec"])
        if spec.key == path.stem:
            if rec["spec"] != spec.to_dict():  # same run, older stored form
                moved[path.stem] = path.stem
                if not dry_run:
                    write_json_atomic(path, {**rec, "spec": spec.to_dict()})
            continue
        if spec_hash(rec["spec"]) != path.stem:
            raise ValueError(f"{path}: its spec hashes neither to the old nor the new key")
        new = {
            **rec,
            "key": spec.key,
            "spec": spec.to_dict(),
            "migrated_from": {
                "key": path.stem,
                "spec": rec["spec"],
                "date": time.strftime("%Y-%m-%d"),
                "note": NOTE,
            },
        }
        moved[path.stem] = spec.key
        if not dry_run:
            write_json_atomic(folder / f"{spec.key}.json", new)
            path.unlink()
    return moved
