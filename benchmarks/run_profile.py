"""Where a sweep run's time goes: start-up, data, base, training steps, evaluations, record.

For one typical spec of each shipped sweep named (its seed-0 run at the grid's middle LR, a
LoRA method where the grid has one), in a fresh process each so nothing is cached:

- **start-up**: importing the worker (``lora_lab.sweeps.worker``: torch and the engine);
- **data**: building the task (``make_task``) and its evaluation metric;
- **base**: loading the pretrained base (``resolve_base``);
- **steps**: the training loop minus the evaluations inside it;
- **evaluations**: every ``Objective.evaluate`` call (held-out loss, accuracy, bits);
- **record**: assembling the record and writing it as JSON.

    python benchmarks/run_profile.py capacity lr_rule rl_rank dpo_capacity

One torch thread per process, as a sweep worker runs. Prints a Markdown table; times are
wall seconds on this machine, so compare shares and ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import lora_lab.sweeps.worker as worker
from lora_lab.threads import set_threads
set_threads(1)
t_import = time.perf_counter() - t0
from lora_lab.findings import get_experiment
from lora_lab.training.loop import Objective

exp = get_experiment(sys.argv[1])
specs = [s for s in exp.specs("full") if s.seed == 0]
lora = [s for s in specs if s.is_lora] or specs
lrs = sorted({s.lr for s in lora})
spec = next(s for s in lora if s.lr == lrs[len(lrs) // 2])
if sys.argv[2] != "as-shipped" and spec.is_lora:  # the same run with another LoRA layer
    from lora_lab.sweeps.spec import RunSpec
    spec = RunSpec.from_dict({**spec.to_dict(), "lora_layer": sys.argv[2]})

spent = {"evaluations": 0.0}

def all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from all_subclasses(sub)

for cls in all_subclasses(Objective):
    if "evaluate" not in vars(cls):
        continue
    def timed(self, *a, _original=vars(cls)["evaluate"], **k):
        t = time.perf_counter()
        try:
            return _original(self, *a, **k)
        finally:
            spent["evaluations"] += time.perf_counter() - t
    cls.evaluate = timed

t = time.perf_counter()
task = worker._task(spec.task, worker._freeze(spec.task_kwargs))
t_data = time.perf_counter() - t
t = time.perf_counter()
worker._base(spec.base)
t_base = time.perf_counter() - t
t = time.perf_counter()
record = worker.run_spec(spec)
t_run = time.perf_counter() - t
t = time.perf_counter()
import tempfile, pathlib
from lora_lab.sweeps.store import ResultStore
with tempfile.TemporaryDirectory() as d:
    ResultStore(d).write(record["key"], record)
t_record = time.perf_counter() - t
print(json.dumps({"experiment": exp.name, "label": spec.label, "lr": spec.lr,
                  "layer": spec.lora_layer,
                  "steps": record["result"]["final"].get("steps_done"),
                  "startup": t_import, "data": t_data, "base": t_base,
                  "steps_s": t_run - spent["evaluations"],
                  "evaluations": spent["evaluations"], "record": t_record,
                  "total": t_import + t_data + t_base + t_run + t_record}))
"""


def profile(name: str, layer: str = "as-shipped") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, name, layer], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{name}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiments", nargs="+", help="shipped sweep names (lora-lab experiments)")
    ap.add_argument("--layers", nargs="+", default=["as-shipped"],
                    help="LoRA layer kinds to time each run with, side by side (e.g. reference "
                    "fused); as-shipped keeps the sweep's own")  # fmt: skip
    args = ap.parse_args()
    parts = ("startup", "data", "base", "steps_s", "evaluations", "record")
    print("| sweep | run | layer | total s | "
          + " | ".join(p.removesuffix("_s") for p in parts) + " |")
    print("|---|---|---|---|" + "---|" * len(parts))
    for name in args.experiments:
        for layer in args.layers:  # interleaved per sweep: both see the same machine state
            r = profile(name, layer)
            shares = " | ".join(f"{r[p]:.1f} ({r[p] / r['total']:.0%})" for p in parts)
            print(f"| {name} | {r['label']} lr {r['lr']:.3g}, {r['steps']:.0f} steps | "
                  f"{r['layer']} | {r['total']:.1f} | {shares} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
