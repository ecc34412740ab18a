"""``lora-lab verify``: rerun recorded runs and say whether the numbers come back.

A record claims that its spec, on the code it names, gives its numbers. Verifying reruns the
spec here (with the record's torch threads) and compares the final held-out loss with the
recorded one, against the spread between seeds of the same condition in the same folder: a
rerun that lands within float noise *reproduces*; one within the seed spread differs by less
than the experiment can resolve; anything else *differs*. Whether the code is the same is
read from the record's source hash (records written before it existed say "unknown").
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lora_lab.sweeps.fast import fast_spec
from lora_lab.sweeps.identity import CODE
from lora_lab.sweeps.lr_search import condition_key
from lora_lab.sweeps.spec import RunSpec
from lora_lab.sweeps.store import ResultStore, validate_record
from lora_lab.sweeps.worker import run_spec
from lora_lab.threads import set_threads

FLOAT_NOISE = 1e-6  # relative: what a rerun of the same code on the same CPU may differ by


def seed_spread(folder: Path, spec: RunSpec) -> float:
    """Std of the final held-out loss over the seeds of ``spec``'s condition at its LR, among
    the records in ``folder`` (NaN with fewer than two seeds)."""
    want = condition_key(spec)
    losses = [rec["result"]["final"]["eval_loss"]
              for rec in ResultStore(folder).scan(warn=False)[0].values()
              if condition_key(s := RunSpec.from_dict(rec["spec"])) == want
              and math.isclose(s.lr, spec.lr)]  # fmt: skip
    losses = [x for x in losses if x is not None and math.isfinite(x)]
    return float(np.std(losses, ddof=1)) if len(losses) > 1 else math.nan


def verify_record(path: str | Path, fast: bool = False) -> dict:
    """Rerun one record file and compare (see the module docstring). ``fast`` reruns it the
    fast way (:func:`~lora_lab.sweeps.fast.fast_spec`: LoRA through the fused layer), which
    should land within the seed spread, not within float noise: the fused layer rounds
    differently, and the difference grows over a run's steps."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no record at {path}")
    try:
        rec = validate_record(path.stem, json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable record ({e})") from None
    spec = RunSpec.from_dict(rec["spec"])
    prov = rec.get("provenance", {})
    before = torch.get_num_threads()
    set_threads(int(prov.get("torch_threads") or before))
    try:
        again = run_spec(fast_spec(spec) if fast else spec)
    finally:
        set_threads(before)
    recorded = rec["result"]["final"]["eval_loss"]
    rerun = again["result"]["final"]["eval_loss"]
    diff = rerun - recorded
    spread = seed_spread(path.parent, spec)
    if abs(diff) <= FLOAT_NOISE * max(1.0, abs(recorded)):
        outcome = "reproduces"
    elif math.isfinite(spread) and abs(diff) <= spread:
        outcome = "within the seed spread"
    else:
        outcome = "differs"
    source = prov.get("source_hash")
    return {
        "record": str(path), "label": spec.label, "lr": spec.lr, "seed": spec.seed,
        "recorded": recorded, "rerun": rerun, "difference": diff, "seed_spread": spread,
        "outcome": outcome, "way": "fast" if fast else "as recorded",
        "code": "unknown (older record)" if source is None
        else ("same" if source == CODE.source_hash else "other"),
        "recorded_commit": prov.get("git_commit"),
    }  # fmt: skip


def verify_records(paths: list[str | Path], fast: bool = False) -> pd.DataFrame:
    """:func:`verify_record` for each path (a folder stands for every record in it)."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.json")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no records in {', '.join(map(str, paths))}")
    return pd.DataFrame([verify_record(f, fast=fast) for f in files])
