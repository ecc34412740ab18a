"""The fast way to run a spec: what a new sweep uses, and what a shipped spec reruns as.

Measured in ``benchmarks/sweep_speed.py`` (per-run wall time, shipped way against fast way,
side by side on the 2-core machine) and profiled in ``benchmarks/run_profile.py``: training
steps are 77-88 % of a run, evaluations 8-21 %, start-up and record writing the rest. So the
levers that count are in the step:

- **the fused LoRA layer** (:mod:`lora_lab.lora.fused`): one autograd node per adapted
  matrix instead of five. Same maths; float rounding differs, so a rerun lands within the
  seed spread of the shipped number, not on it (``lora-lab verify --fast`` checks that).
- **foreach AdamW** (:func:`~lora_lab.training.optim.make_adamw`): bit-identical updates in
  fewer kernel calls; every run gets it, shipped specs included, since nothing changes.

Measured and left: torch.compile (issue 28: 1.17-1.20x per step at d=192, but its first
step on `tiny` at the sweeps' shape compiles for about a minute, longer than most runs, and
a sweep builds a new model instance per run); evaluations are already batched under
``no_grad`` on tokens encoded once per task and kept by the worker (the fused layer's
``no_grad`` path also skips the adapter's saved tensors). At the sweeps' compact shapes a
step is mostly per-op overhead and element-wise work that FullFT and LoRA share, which is
why the fast way gains 1.04-1.19x per run there (``benchmarks/sweep_speed.py``), not more.

A spec's key includes its layer, so the shipped records (reference layer) keep their keys;
new experiments set ``Experiment(lora_layer=FAST_LORA_LAYER)``, and a test refuses a new
experiment that does not.
"""

from __future__ import annotations

from lora_lab.sweeps.spec import RunSpec

FAST_LORA_LAYER = "fused"


def fast_spec(spec: RunSpec) -> RunSpec:
    """``spec`` the fast way: a LoRA run through the fused layer (a FullFT run is already as
    fast as it gets, and returned unchanged). Where the fused layer cannot apply (dropout
    > 0), the layer falls back to the reference arithmetic by itself."""
    if not spec.is_lora or spec.lora_layer == FAST_LORA_LAYER:
        return spec
    return RunSpec.from_dict({**spec.to_dict(), "lora_layer": FAST_LORA_LAYER})
