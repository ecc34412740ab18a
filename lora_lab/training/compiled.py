"""Compiled training steps: ``torch.compile`` on the model a run trains, switched on for the
runs of a long sweep.

Why it pays only in a sweep: compiling a block, forward and backward, takes ~40-110 s per
shape family on one CPU thread with the other worker busy (``benchmarks/sweep_speed.py``),
longer than most runs. But torch keeps compiled graphs per process, keyed by the code and
guarded on shapes, dtypes and grad mode, not on the module instance, so every later run in
the same worker process with the same shapes (the next seed, the next learning rate) reuses
them and pays nothing. A sweep worker lives across runs, so it pays the compile at most
once per shape family (FullFT; each target set of the fused LoRA layer, whose rank is
symbolic, :func:`adapter_ranks`) and then runs faster. Less than that: compiled kernels
also land in torch's on-disk cache, and a compiled sweep starts its workers on different families
(:func:`~lora_lab.sweeps.fast.families_first`), so a worker loads the families another one
built. ``benchmarks/sweep_speed.py`` measures the gain per shipped sweep, with and without
charging the compiles (README's sweep-speed block). A handful of runs would not earn it
back: :func:`worth_compiling` says when a sweep should (MoE models stay eager:
data-dependent routing breaks the graph).

Compiled runs also pack their tokens: a supervised loss computes only each row's positions
up to its last loss position (:meth:`~lora_lab.model.CompactLM.packed_logits`), ~1/4 of a
padded batch's positions on the instruct tasks. Same loss up to float rounding; the graph's
token count is symbolic, so every batch reuses it. Not for MoE models (eager here) nor where a
forward draws dropout masks.

Only the transformer blocks compile ("regional compilation"): they share one forward, so
the graph is built once and reused by every layer. The whole model compiled as one graph
took ~100 s per shape family on `tiny`, which no sweep here earns back.

The numbers: a compiled step computes the same maths with fused kernels, so losses differ
from eager ones in float rounding only (a test compares them), like the fused LoRA layer.
A record says whether its run was compiled (``provenance.compiled``).

Switched by a context (:func:`compiled_steps`) that the sweep worker enters around a run, so
nothing else in the process (a notebook's panel, the tests) compiles by surprise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from lora_lab.lora.fused import FusedLoRALinear

# runs a worker makes per compile it pays, from which a sweep compiles by default: in
# benchmarks/sweep_speed.py a compile paid for itself after 0.7-10 runs (median ~5)
MIN_RUNS_PER_COMPILE = 8
RECOMPILE_LIMIT = 64  # graphs kept per compiled function in one process

_active = False
_ran_compiled = False  # whether maybe_compiled compiled a model inside the current context


def compiler_missing(device: torch.device | str = "cpu") -> str | None:
    """Why ``torch.compile`` cannot build kernels here (inductor needs a C++ compiler on the
    CPU), or None when it can."""
    if torch.device(device).type == "cpu":
        names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(n and shutil.which(n) for n in names):
            return "no C++ compiler on PATH (torch.compile's CPU backend needs g++ or clang++)"
    return None


def worth_compiling(runs_per_worker: float, compiles_per_worker: int = 1,
                    device: torch.device | str = "cpu") -> bool:  # fmt: skip
    """Whether a sweep whose workers each make ``runs_per_worker`` runs and compile
    ``compiles_per_worker`` times (once per shape family) should compile: enough runs per
    compile to earn it back, and a compiler to build with."""
    enough = runs_per_worker >= MIN_RUNS_PER_COMPILE * max(compiles_per_worker, 1)
    return enough and compiler_missing(device) is None


@contextmanager
def compiled_steps(on: bool = True) -> Iterator[bool]:
    """Inside the block, :func:`run_loop <lora_lab.training.loop.run_loop>` trains a compiled
    model when ``on`` and a compiler is at hand; yields whether it will. Restores the previous
    setting on exit."""
    global _active, _ran_compiled
    before = _active, _ran_compiled
    _active, _ran_compiled = bool(on) and compiler_missing() is None, False
    try:
        yield _active
    finally:
        _active, _ran_compiled = before


def compiling() -> bool:
    """Whether runs started now compile (inside :func:`compiled_steps`)."""
    return _active


def ran_compiled() -> bool:
    """Whether a model was compiled inside the current :func:`compiled_steps` block (what a
    record's ``provenance.compiled`` says: a model left eager, e.g. a MoE, says False)."""
    return _ran_compiled


def adapter_ranks(model: nn.Module) -> None:
    """Let one compiled graph serve every adapter rank: the fused layers' rank dimensions
    (``lora_A``'s rows, ``lora_B``'s columns) become symbolic, every other parameter and
    buffer stays static as torch would keep it.

    Why: parameter shapes are static in torch's guards by default, so each rank of a sweep
    compiled its own graphs (~40-110 s each on one CPU thread). With the rank symbolic, a
    worker compiles once per target set and base, plus once for rank 1 (torch specialises
    sizes 0 and 1); the fused layer passes its scale alpha / r as a tensor so it is not baked
    into the graph either. Every other shape stays specialised (a dynamic width would make
    kernels generic for no saving). Per-run time is unchanged (compiled r = 4, 16, 64 against
    per-rank graphs, lr_rule's shape: 93 s against 94 s over nine runs)."""
    config = torch._dynamo.config
    config.force_parameter_static_shapes = False  # else marks on parameters are ignored
    config.force_nn_module_property_static_shapes = False
    rank_dims = {}
    for module in model.modules():
        if isinstance(module, FusedLoRALinear):
            rank_dims[module.lora_A.weight] = 0
            rank_dims[module.lora_B.weight] = 1
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor in rank_dims:
            torch._dynamo.maybe_mark_dynamic(tensor, rank_dims[tensor])
        elif tensor.dim():
            torch._dynamo.mark_static(tensor)


def maybe_compiled(model: nn.Module) -> nn.Module:
    """``model`` with its transformer blocks compiled when :func:`compiling` (in place: the
    same module, parameters and ``state_dict``), else ``model`` untouched.

    Regional compilation: the blocks of a model share one forward, so torch compiles it once
    and every layer reuses the graph; compiling the whole model would trace every layer into
    one graph and take ~n_layer times longer, paid again for every new shape family.
    Embedding, final norm and head stay
    eager: a small share of a step."""
    if not _active or getattr(getattr(model, "config", None), "is_moe", False):
        return model  # MoE routing is data-dependent (graph breaks); not measured to gain
    # each adapter shape, grad mode and evaluation batch adds graphs; torch's default limit
    # of 8 per function would silently fall back to eager partway through a sweep
    global _ran_compiled
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    adapter_ranks(model)
    blocks = list(getattr(model, "layers", ()))
    for block in blocks:
        block.compile()
    _ran_compiled = _ran_compiled or bool(blocks)
    if blocks and hasattr(model, "packed_logits"):  # a CompactLM: its losses pack too
        model.pack_tokens = not _draws_dropout(model)
    return model


def _draws_dropout(model: nn.Module) -> bool:
    """Whether a forward draws dropout masks: packed tokens would draw other random numbers
    (one per kept token instead of one per position), so such runs stay padded."""
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
