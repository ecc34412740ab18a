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
- **compiled steps** (:mod:`lora_lab.training.compiled`): the transformer blocks through
  torch.compile, graphs kept by each worker for its next runs of the same shapes. A compile
  costs ~40-110 s per shape family (FullFT, each target set of the fused layer, rank 1
  apart; each rank of the reference layer), so ``lora-lab sweep``
  compiles by default only where each worker has enough runs per compile
  (:func:`worth_compiling_sweep`), and the benchmark charges every sweep its compiles.
  Float rounding differs from eager, as with the fused layer; records say
  ``provenance.compiled``. A compiled sweep runs the first run of each family first
  (:func:`families_first`), so a family is built from scratch once and the other worker
  loads it from torch's on-disk cache. That load is not free: the fused layer is a custom
  ``autograd.Function``, which torch's AOT-autograd cache does not store (it bypasses
  ``autograd_function_apply``), so a LoRA family's load still re-traces forward and
  backward and costs several times a FullFT family's (the benchmark record's warm loads).
- **packed tokens** (:meth:`~lora_lab.model.CompactLM.packed_logits`), in compiled runs:
  the supervised loss computes each row only up to its last loss position, not to the
  batch's longest example; ~1/4 fewer positions through the projections and MLPs on the
  instruct tasks (rows average 37 of 50 positions), ~1/3 on two-hop (44 of 67). Float
  rounding only, like compiling; dense models (a MoE's balancing term counts every token).

Evaluations are already batched under ``no_grad`` on tokens encoded once per task and kept
by the worker (the fused layer's ``no_grad`` path also skips the adapter's saved tensors).
At the sweeps' compact shapes an eager step is mostly per-op overhead and element-wise work
that FullFT and LoRA share: the fused layer and foreach AdamW alone gained 1.0-1.19x per
run; compiling fuses exactly that work.

A spec's key includes its layer, so the shipped records (reference layer) keep their keys;
new experiments set ``Experiment(lora_layer=FAST_LORA_LAYER)``, and a test refuses a new
experiment that does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from lora_lab.sweeps.spec import RunSpec
from lora_lab.training.compiled import worth_compiling

FAST_LORA_LAYER = "fused"


def fast_spec(spec: RunSpec) -> RunSpec:
    """``spec`` the fast way: a LoRA run through the fused layer (a FullFT run is already as
    fast as it gets, and returned unchanged). Where the fused layer cannot apply (dropout
    > 0), the layer falls back to the reference arithmetic by itself."""
    if not spec.is_lora or spec.lora_layer == FAST_LORA_LAYER:
        return spec
    return RunSpec.from_dict({**spec.to_dict(), "lora_layer": FAST_LORA_LAYER})


def shape_family(spec: RunSpec) -> tuple:
    """What a compiled graph is specialised to: FullFT or LoRA, the base, and the method.

    The fused layer's rank is symbolic in compiled graphs
    (:func:`~lora_lab.training.compiled.adapter_ranks`) and its scale an input, so its
    family is the target set and base, with rank 1 apart (torch specialises sizes 0 and 1);
    the reference layer bakes rank and alpha into the graph, one family per rank."""
    method = spec.method
    if spec.is_lora and spec.lora_layer == FAST_LORA_LAYER and not method.lora_dropout:
        rank = "r=1" if method.r == 1 else "r>=2"
        method = replace(method, r=1, lora_alpha=1.0)  # neither is baked into the graph
        return (True, spec.base, repr(method), rank)
    return (spec.is_lora, spec.base, repr(method))


def families_first(specs: Iterable[RunSpec]) -> list[RunSpec]:
    """``specs`` reordered for a compiled sweep: the first run of each shape family, then the
    rest family by family, each family in its given order.

    Why: compiled kernels land in torch's on-disk cache, which every worker on the machine
    reads. Started together on the same family, the workers would each compile it from
    scratch; started on different families, each compiles its own, and a worker that later
    meets a family another compiled loads its kernels from the cache (tracing only, no C++
    build). The rest follows in the same family order, so by the time a worker reaches a
    family its first run has long been compiled."""
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(shape_family(spec), []).append(spec)
    firsts = [group[0] for group in groups.values()]
    return firsts + [spec for group in groups.values() for spec in group[1:]]


def compiles_per_worker(specs: Iterable[RunSpec]) -> dict[str, int]:
    """How many times a worker that meets every one of ``specs`` compiles, for LoRA and for
    FullFT: once per shape family (:func:`shape_family`) and once more where a family runs
    more than one batch size (torch then treats the batch as dynamic). An upper bound: a
    worker may not meet every family."""
    batches: dict[tuple, set[int]] = {}
    for spec in specs:
        batches.setdefault(shape_family(spec), set()).add(spec.batch_size)
    counts = {"lora": 0, "full": 0}
    for (is_lora, *_), sizes in batches.items():
        counts["lora" if is_lora else "full"] += 1 + (len(sizes) > 1)
    return counts


def worth_compiling_sweep(specs: list[RunSpec], jobs: int) -> bool:
    """Whether a sweep of ``specs`` over ``jobs`` workers should train compiled: enough runs
    per compile a worker pays (:data:`~lora_lab.training.compiled.MIN_RUNS_PER_COMPILE`), and
    a compiler at hand."""
    compiles = sum(compiles_per_worker(specs).values())
    return worth_compiling(len(specs) / max(jobs, 1), compiles)
