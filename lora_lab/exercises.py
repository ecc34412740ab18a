"""Self-checking exercises for the notebooks: each checker gives a hint, never a traceback,
and records its outcome in the executed notebook so ``lora-lab grade`` can collect it.

The answers are not here: they live in :mod:`lora_lab.solutions`, for instructors (and for
the tests that keep every checker honest: the answer passes, a wrong answer does not).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lora_lab.analysis import optimum_from_curve
from lora_lab.lora import LoRALinear
from lora_lab.solutions import (
    reference_advantage_bits,
    reference_alpha_exponent,
    reference_dpo_loss,
    reference_failing_size,
    reference_group_advantages,
    reference_predict_ratio,
    reference_ratio_interval,
)
from lora_lab.sweeps.lr_search import LRSearch


def check_lora_forward(
    fn: Callable[..., torch.Tensor | None], seed: int = 0, quiet: bool = False
) -> bool:
    """Check a student's ``fn(x, W, A, B, alpha, r) -> y`` against :class:`LoRALinear`.

    Shapes: x (batch, d_in), W (d_out, d_in), A (r, d_in), B (d_out, r). Prints a verdict
    (unless ``quiet``) and returns whether it matches on several random layers (including a
    non-zero B). A mistake is a hint, never a traceback.
    """
    return _verdict(
        lambda: _lora_forward_hint(fn, seed),
        quiet,
        "Correct: your forward pass matches lora_lab's LoRALinear (and PEFT's).",
    )


def _lora_forward_hint(fn: Callable[..., torch.Tensor | None], seed: int) -> str | None:
    gen = torch.Generator().manual_seed(seed)
    for d_in, d_out, r in [(8, 6, 2), (32, 16, 4), (17, 5, 1)]:
        layer = LoRALinear(torch.nn.Linear(d_in, d_out, bias=False), r=r)
        with torch.no_grad():
            layer.lora_B.weight.copy_(torch.randn(d_out, r, generator=gen))
        x = torch.randn(3, d_in, generator=gen)
        want = layer(x).detach()
        W, A, B = (layer.base_layer.weight.detach(), layer.lora_A.weight.detach(),
                   layer.lora_B.weight.detach())  # fmt: skip
        try:
            got = _call(fn, x, W, A, B, layer.lora_alpha, r)
        except _HintError as e:
            if "shape" in str(e) or "size" in str(e) or "dimension" in str(e):
                return (f"{e} -- a shape mismatch: x is (batch, d_in), W (d_out, d_in), "
                        "A (r, d_in), B (d_out, r); x @ W.T is (batch, d_out).")  # fmt: skip
            raise
        if got is None or not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = None if not isinstance(got, torch.Tensor) else tuple(got.shape)
            return f"Not yet: expected a tensor of shape {tuple(want.shape)}, got {shape}."
        err = float((got - want).abs().max())
        if err > 1e-5:
            W, A, B = layer.base_layer.weight, layer.lora_A.weight, layer.lora_B.weight
            with torch.no_grad():
                if torch.allclose(got, x @ W.T, atol=1e-5):
                    hint = "the low-rank term B @ A is missing."
                elif torch.allclose(got, x @ W.T + (x @ A.T) @ B.T, atol=1e-5):
                    hint = "did you forget the alpha / r scaling?"
                else:
                    hint = "check the shapes: x @ W.T, and x @ A.T @ B.T for the update."
            where = f"d_in={d_in}, d_out={d_out}, r={r}"
            return f"Not yet: max difference {err:.3g} ({where}); {hint}"
    return None




# ----------------------------------------------------------------------------- shared
class _HintError(Exception):
    """The student's function raised, or was not attempted; the message is the hint."""


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call the student's function; turn any exception into a hint, never a traceback."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise _HintError(
            "Not attempted yet: replace `raise NotImplementedError` with your code."
        ) from None
    except Exception as e:  # noqa: BLE001 - a student's bug is feedback, not a crash
        raise _HintError(f"Not yet: your function raised {type(e).__name__}: {e}") from None


EXERCISE_MIME = "application/vnd.lora-lab.exercise+json"
NOT_ATTEMPTED = "Not attempted yet"


def _verdict(check: Callable[[], str | None], quiet: bool, success: str = "Correct.") -> bool:
    """Run ``check`` (returns None when right, else a hint); print the outcome and, unless
    ``quiet`` (a checker's own self-test), record it for grading. The exercise is named
    after the checker that called this (``check_bits_in_facts`` -> ``bits_in_facts``)."""
    try:
        hint = check()
    except _HintError as e:
        hint = str(e)
    if not quiet:
        exercise = sys._getframe(1).f_code.co_name.removeprefix("check_")
        outcome = "passed" if hint is None else (
            "not attempted" if hint.startswith(NOT_ATTEMPTED) else "failed")  # fmt: skip
        _emit_outcome(exercise, outcome, hint or success)
    return hint is None


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ != "TerminalInteractiveShell"


def _display(data: dict[str, Any]) -> None:
    from IPython.display import display

    display(data, raw=True)


def _emit_outcome(exercise: str, outcome: str, message: str) -> None:
    """Show the message; inside a Jupyter kernel it goes out as a display output that also
    carries a machine-readable outcome (the notebook records mechanism), which
    ``lora-lab grade`` reads back from the saved notebook."""
    if not _in_kernel():
        print(message)
        return
    payload = {"exercise": exercise, "outcome": outcome, "message": message}
    _display({EXERCISE_MIME: payload, "text/plain": message})


# ----------------------------------------------------------------------------- notebook 01
def check_bits_in_facts(fn: Callable[[int], float], quiet: bool = False) -> bool:
    """``fn(n_facts)``: the information, in bits, in ``n_facts`` random 4-letter codes."""

    def check() -> str | None:
        for n in (1, 250, 1000):
            got, want = _call(fn, n), n * 4 * math.log2(26)
            if not isinstance(got, (int, float)) or not math.isfinite(got):
                return f"Not yet: return a number of bits, got {got!r}."
            if abs(got - want) > 1e-6 * want:
                if abs(got - n * 4 * math.log(26)) < 1e-6 * want:
                    return "Not yet: that is in nats; bits use log base 2."
                if abs(got - n * math.log2(26)) < 1e-6 * want:
                    return "Not yet: each fact has 4 letters, each one of 26."
                return f"Not yet: for N={n} expected {want:.1f} bits, got {got:.1f}."
        return None

    return _verdict(check, quiet)


def check_out_of_room_rule(
    fn: Callable[[int, int, float], bool], table: Any, quiet: bool = False
) -> bool:
    """``fn(n_facts, trainable_params, bits_per_param) -> bool``: does this adapter run out
    of room? Scored against what the capacity sweep measured (``table``: capacity_table
    with a ``bound`` column); right when it agrees on every adapter row."""
    rows = table[table.label != "FullFT"]
    bpp = float(rows[rows.bound].bits_per_param.median())

    def check() -> str | None:
        wrong = []
        for r in rows.itertuples():
            got = _call(fn, int(r.n_facts), int(r.trainable_params), bpp)
            if not isinstance(got, (bool,)) and not hasattr(got, "__bool__"):
                return f"Not yet: return True or False, got {got!r}."
            if bool(got) != bool(r.bound):
                wrong.append(f"{r.label} at N={r.n_facts} (measured: "
                             f"{'out of room' if r.bound else 'room to spare'})")  # fmt: skip
        if wrong:
            return (f"Not yet: {len(rows) - len(wrong)} of {len(rows)} right; wrong on "
                    + "; ".join(wrong[:3]) + ". Compare what the adapter can hold "
                    "(parameters x bits per parameter) with the bits in the data.")  # fmt: skip
        return None

    return _verdict(check, quiet)


# ----------------------------------------------------------------------------- notebook 02
def check_parabola_optimum(fn: Callable[[list, list], float], quiet: bool = False) -> bool:
    """``fn(lrs, losses)``: the LR at the vertex of the parabola through three points of a
    U-curve in log(lr) (the middle one lowest)."""
    cases = [
        ([1e-3, 1.47e-3, 2.15e-3], [2.10, 2.00, 2.05]),
        ([1e-4, 2.15e-4, 4.64e-4], [1.9, 1.7, 1.9]),
        ([3.16e-3, 4.64e-3, 6.81e-3], [0.51, 0.50, 0.58]),
    ]

    def check() -> str | None:
        for lrs, losses in cases:
            want = optimum_from_curve(np.array(lrs), np.array(losses))[0]
            got = _call(fn, list(lrs), list(losses))
            if not isinstance(got, (int, float)) or not math.isfinite(got):
                return f"Not yet: return a learning rate, got {got!r}."
            if abs(math.log(got / want)) > 1e-3:
                lin = np.polyfit(lrs, losses, 2)
                if abs(got - (-lin[1] / (2 * lin[0]))) < 1e-9:
                    return "Not yet: fit the parabola in log(lr), then take exp of the vertex."
                return f"Not yet: for {lrs} expected {want:.3g}, got {got:.3g}."
        return None

    return _verdict(check, quiet)


def check_is_interior(fn: Callable[[list, list], bool], quiet: bool = False) -> bool:
    """``fn(lrs, losses)``: is the best LR an interior optimum at 1.47x, i.e. both
    neighbours measured, worse, and at most 10**(1/6) away?"""
    cases = [
        ([1e-3, 1.47e-3, 2.15e-3], [2.1, 2.0, 2.05], True, "a clean interior optimum"),
        ([1e-3, 1.47e-3, 2.15e-3], [2.0, 2.1, 2.2], False, "the best LR at the lower edge"),
        ([1e-3, 2.15e-3, 4.64e-3], [2.1, 2.0, 2.05], False, "neighbours 2.15x away"),
        ([1e-3, 1.47e-3, 2.15e-3, 3.16e-3], [2.3, 2.1, 2.2, 2.0], False, "best at the top"),
    ]

    def check() -> str | None:
        for lrs, losses, want, what in cases:
            got = _call(fn, list(lrs), list(losses))
            if bool(got) != want:
                return f"Not yet: {what} ({lrs}, {losses}) should give {want}."
        return None

    return _verdict(check, quiet)


# ----------------------------------------------------------------------------- notebook 03
def check_lr_exponent(fn: Callable[[list, list], float], quiet: bool = False) -> bool:
    """``fn(batch_sizes, best_lrs)``: p in LR ∝ batch^p, by least squares in log-log."""
    rng = np.random.default_rng(0)
    batches = [2, 4, 8, 16, 32, 64]

    def check() -> str | None:
        for p in (0.5, 0.3, 1.0):
            lrs = [1e-3 * (b / 2) ** p * float(np.exp(rng.normal(0, 0.05))) for b in batches]
            want = float(np.polyfit(np.log(batches), np.log(lrs), 1)[0])
            got = _call(fn, list(batches), list(lrs))
            if not isinstance(got, (int, float)) or not math.isfinite(got):
                return f"Not yet: return the exponent p, got {got!r}."
            if abs(got - want) > 1e-6:
                return (f"Not yet: expected p = {want:.3f}, got {got:.3f}. Take logs of both "
                        "batch size and LR; p is the slope, not the intercept.")  # fmt: skip
        return None

    return _verdict(check, quiet)


def check_paired_gap(fn: Callable[[dict, dict], float], quiet: bool = False) -> bool:
    """``fn(lora_by_seed, full_by_seed)``: the mean over seeds of (LoRA - FullFT) loss,
    paired by seed, using only seeds present on both sides."""
    cases = [
        ({0: 2.10, 1: 2.20, 2: 2.00}, {0: 2.00, 1: 2.10, 2: 2.00}),
        ({0: 1.0, 1: 1.5, 3: 1.2}, {0: 0.9, 1: 1.4, 2: 5.0}),
    ]

    def check() -> str | None:
        for lora, full in cases:
            common = sorted(set(lora) & set(full))
            want = sum(lora[s] - full[s] for s in common) / len(common)
            got = _call(fn, dict(lora), dict(full))
            if not isinstance(got, (int, float)) or not math.isfinite(got):
                return f"Not yet: return a number, got {got!r}."
            if abs(got - want) > 1e-9:
                return (f"Not yet: expected {want:+.4f}, got {got:+.4f}. Pair by seed (same "
                        "seed: same initialisation and batches) and skip seeds that are "
                        "missing on either side.")  # fmt: skip
        return None

    return _verdict(check, quiet)


# The answers, for the notebooks' self-tests of the checkers (kept out of the notebooks).












# ----------------------------------------------------------------------------- notebook 04
def check_lora_param_count(fn: Callable[[int, int, int], int], quiet: bool = False) -> bool:
    """``fn(d_in, d_out, r)``: trainable parameters of one LoRA adapter on a d_out x d_in
    matrix (A is r x d_in, B is d_out x r)."""

    def check() -> str | None:
        for d_in, d_out, r in [(64, 64, 4), (64, 176, 5), (176, 64, 1), (128, 128, 24)]:
            got, want = _call(fn, d_in, d_out, r), r * (d_in + d_out)
            if got != want:
                if got == d_in * d_out:
                    return "Not yet: that is the frozen matrix; LoRA trains A and B only."
                if got == r * d_in or got == r * d_out:
                    return "Not yet: count both A (r x d_in) and B (d_out x r)."
                return f"Not yet: for d_in={d_in}, d_out={d_out}, r={r} expected {want}, got {got}."
        return None

    return _verdict(check, quiet)


def check_matching_rank(fn: Callable[[int, int], int], quiet: bool = False) -> bool:
    """``fn(budget, params_per_rank)``: the rank whose parameter count is closest to
    ``budget`` when one rank costs ``params_per_rank`` parameters (at least 1)."""

    def check() -> str | None:
        for budget, per_rank in [(14_400, 2_048), (14_400, 2_880), (74_000, 4_928), (100, 4_928)]:
            want = max(1, round(budget / per_rank))
            got = _call(fn, budget, per_rank)
            if got != want:
                hint = "Round to the nearest whole rank, never below 1."
                return (f"Not yet: budget {budget:,} at {per_rank:,} per rank: expected "
                        f"r={want}, got {got!r}. {hint}")  # fmt: skip
        return None

    return _verdict(check, quiet)






def check_flop_ratio(fn: Callable[[int, int], float], quiet: bool = False) -> bool:
    """``fn(n, r)``: the post's LoRA / FullFT FLOP ratio for one n x n matrix per token:
    (2 n^2 + 6 n r) / (3 n^2)."""

    def check() -> str | None:
        for n, r in [(4096, 1), (4096, 64), (64, 64), (128, 8)]:
            got, want = _call(fn, n, r), (2 * n * n + 6 * n * r) / (3 * n * n)
            if not isinstance(got, (int, float)) or not math.isclose(got, want, rel_tol=1e-9):
                if isinstance(got, (int, float)) and math.isclose(got, 2 / 3, rel_tol=1e-9):
                    return "Not yet: 2/3 is the limit; the A and B paths add 6 n r."
                if isinstance(got, (int, float)) and math.isclose(got, 2 / 3 + 4 * r / (3 * n)):
                    return (
                        "Not yet: the A and B paths cost forward, input gradient and "
                        "their own weight gradients: 6 n r, not 4 n r."
                    )
                return f"Not yet: for n={n}, r={r} expected {want:.4f}, got {got!r}."
        return None

    return _verdict(check, quiet)


def check_adam_bytes(fn: Callable[[int], int], quiet: bool = False) -> bool:
    """``fn(trainable)``: bytes a step keeps for ``trainable`` fp32 parameters beyond the
    weights themselves: the gradient and AdamW's two moments (4 bytes each)."""

    def check() -> str | None:
        for n in (1, 1_000, 39_424, 213_952):
            got, want = _call(fn, n), 12 * n
            if got != want:
                if got in (8 * n, 4 * n):
                    return "Not yet: a gradient plus two Adam moments, 4 bytes each."
                if got in (3 * n, 2 * n):
                    return "Not yet: those are floats; count bytes (fp32 = 4 bytes)."
                return f"Not yet: for {n:,} trainable parameters expected {want:,}, got {got!r}."
        return None

    return _verdict(check, quiet)






# ----------------------------------------------------------------------------- notebook 05


def check_group_advantages(fn: Callable[[list], list], quiet: bool = False) -> bool:
    """``fn(rewards)``: one prompt's group of 1/0 rewards -> the GRPO-style advantages
    (each reward minus the group's mean; no division by the std)."""

    def check() -> str | None:
        for rewards in ([1, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0, 1, 0, 0, 0], [0, 0]):
            got = _call(fn, list(rewards))
            want = reference_group_advantages(rewards)
            try:
                got = [float(g) for g in got]
            except TypeError:
                return f"Not yet: return one number per reward, got {got!r}."
            if len(got) != len(want):
                return f"Not yet: {len(rewards)} rewards need {len(rewards)} advantages."
            if not all(abs(g - w) < 1e-9 for g, w in zip(got, want)):
                mean = sum(rewards) / len(rewards)
                if all(abs(g - r) < 1e-9 for g, r in zip(got, rewards)) and mean:
                    return "Not yet: subtract the group's mean reward (the baseline)."
                return f"Not yet: for rewards {rewards} expected {want}, got {got}."
        return None

    return _verdict(check, quiet)


def check_advantage_bits(fn: Callable[[int, int], float], quiet: bool = False) -> bool:
    """``fn(correct, group_size)``: the most a group can tell the learner, in bits: the
    entropy of its advantages, ``group_size * h(correct / group_size)``."""

    def check() -> str | None:
        for k, g in ((4, 8), (1, 8), (0, 8), (8, 8), (3, 4)):
            got, want = _call(fn, k, g), reference_advantage_bits(k, g)
            if not isinstance(got, (int, float)) or abs(got - want) > 1e-6:
                if k in (0, g) and isinstance(got, (int, float)) and math.isnan(got):
                    return "Not yet: an all-right or all-wrong group carries 0 bits (0 log 0 = 0)."
                return f"Not yet: {k} right of {g} should carry {want:.4f} bits, got {got!r}."
        return None

    return _verdict(check, quiet)






# ----------------------------------------------------------------------------- notebook 08
def check_next_lrs(fn: Callable[[list, list], list], quiet: bool = False) -> bool:
    """``fn(lrs, losses)``: the LRs to run next for one method, as lora_lab's search would
    (6 LRs per decade, values rounded to 3 significant digits)."""
    cases = [
        ([1e-4, 2.15e-4, 4.64e-4], [1.3, 1.2, 1.1]),  # best at the high edge
        ([1e-4, 2.15e-4, 4.64e-4], [1.0, 1.2, 1.4]),  # best at the low edge
        ([1e-4, 2.15e-4, 4.64e-4], [1.2, 1.0, 1.1]),  # inside, neighbours 2.15x away
        ([1e-4, 1.47e-4, 2.15e-4], [1.2, 1.0, 1.1]),  # an optimum at 1.47x: nothing to run
        ([3e-4], [1.0]),  # a single LR
    ]

    def check() -> str | None:
        for lrs, losses in cases:
            want = LRSearch().next_lrs(dict(zip(lrs, losses)))
            got = _call(fn, list(lrs), list(losses))
            if got is None or not all(isinstance(x, (int, float)) for x in got):
                return f"Not yet: return a list of learning rates, got {got!r}."
            if sorted(float(f"{x:.3g}") for x in got) != want:
                return (f"Not yet: for lrs {lrs} and losses {losses} the search runs {want}, "
                        f"you proposed {sorted(got)}. At an edge, go 2 lattice steps (2.15x) "
                        "past it; inside, measure the missing neighbours at 1.47x; a single "
                        "LR gets 2.15x on each side.")  # fmt: skip
        return None

    return _verdict(check, quiet)


def check_ratio_interval(
    fn: Callable[[float, float, float, float], tuple], quiet: bool = False
) -> bool:
    """``fn(lo_a, hi_a, lo_b, hi_b)``: the interval of the ratio a / b of two optima from
    their location intervals (``lo = 0`` or ``hi = inf`` where a location is open)."""
    cases = [(1e-3, 4e-3, 5e-4, 1e-3), (2e-3, math.inf, 1e-3, 2e-3), (1e-3, 2e-3, 0.0, 1e-3)]

    def check() -> str | None:
        for case in cases:
            want = reference_ratio_interval(*case)
            got = _call(fn, *case)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                return f"Not yet: return (lo, hi), got {got!r}."
            if not all(math.isclose(g, w) or g == w for g, w in zip(got, want)):
                return (f"Not yet: for a in [{case[0]}, {case[1]}] and b in [{case[2]}, "
                        f"{case[3]}] the ratio lies in {want}, you gave {tuple(got)}. The "
                        "smallest ratio pairs a's lowest with b's highest; an open end stays "
                        "open.")  # fmt: skip
        return None

    return _verdict(check, quiet)






# ----------------------------------------------------------------------------- notebook 07
def check_alpha_exponent(fn: Callable[[list, list], float], quiet: bool = False) -> bool:
    """``fn(alphas, best_lrs)`` for two (alpha, best LR) pairs: s in LR_opt ∝ alpha^s."""
    cases = [([4.0, 32.0], [8.6e-3, 2.3e-3]), ([8.0, 128.0], [5e-3, 1e-3]),
             ([32.0, 4.0], [1e-3, 4e-3])]  # fmt: skip

    def check() -> str | None:
        for alphas, lrs in cases:
            want = reference_alpha_exponent(alphas, lrs)
            got = _call(fn, list(alphas), list(lrs))
            if not isinstance(got, (int, float)) or not math.isfinite(got):
                return f"Not yet: return the exponent s, got {got!r}."
            if abs(got - want) > 1e-9:
                return (f"Not yet: for alphas {alphas} and best LRs {lrs} the exponent is "
                        f"{want:.3f}, you gave {got:.3f}. It is the slope in log-log: "
                        "log(lr2 / lr1) / log(alpha2 / alpha1) (negative: a larger alpha "
                        "wants a smaller LR).")  # fmt: skip
        return None

    return _verdict(check, quiet)


def check_predict_ratio(fn: Callable[[float, float, float], float], quiet: bool = False) -> bool:
    """``fn(ratio_at_32, exponent, alpha)``: the LoRA / FullFT ratio at ``alpha`` from the
    ratio at alpha = 32 and the exponent s of LR_opt ∝ alpha^s (FullFT has no alpha)."""
    cases = [(2.0, -0.6, 8.0), (1.5, -0.5, 128.0), (3.0, 0.0, 4.0)]

    def check() -> str | None:
        for case in cases:
            want = reference_predict_ratio(*case)
            got = _call(fn, *case)
            if not isinstance(got, (int, float)) or not math.isfinite(got):
                return f"Not yet: return a ratio, got {got!r}."
            if not math.isclose(got, want, rel_tol=1e-9):
                return (f"Not yet: ratio {case[0]} at alpha 32 with s = {case[1]} gives "
                        f"{want:.3g} at alpha {case[2]:g}, you gave {got:.3g}. Only LoRA's "
                        "optimum moves: multiply by (alpha / 32) ** s.")  # fmt: skip
        return None

    return _verdict(check, quiet)






# ----------------------------------------------------------------------------- notebook 09
def check_dpo_loss(fn: Callable[[float, float, float, float, float], float],
                   quiet: bool = False) -> bool:  # fmt: skip
    """``fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)``: one pair's DPO
    loss from its four sequence log-probabilities, ``-log sigmoid(beta * h)``."""

    def check() -> str | None:
        cases = [(-3.0, -5.0, -4.0, -5.0, 0.1), (-2.0, -2.0, -2.0, -2.0, 0.5),
                 (-10.0, -1.0, -9.0, -3.0, 1.0), (-7.5, -8.0, -6.0, -9.0, 0.2)]  # fmt: skip
        for pc, pr, rc, rr, beta in cases:
            got, want = _call(fn, pc, pr, rc, rr, beta), reference_dpo_loss(pc, pr, rc, rr, beta)
            if not isinstance(got, (int, float)) or not math.isfinite(got):
                return f"Not yet: return the loss as a number, got {got!r}."
            if abs(got - want) > 1e-6:
                h = (pc - rc) - (pr - rr)
                if abs(got - math.log1p(math.exp(-h))) < 1e-6:
                    return "Not yet: multiply the log-ratio difference by beta before sigmoid."
                if abs(got - math.log1p(math.exp(beta * h))) < 1e-6:
                    return ("Not yet: the sign is flipped: the chosen completion's log-ratio "
                            "comes first, the rejected one's is subtracted.")  # fmt: skip
                if abs(got - math.log1p(math.exp(-beta * (pc - pr)))) < 1e-6:
                    return ("Not yet: measure each completion against the reference "
                            "(log pi - log pi_ref).")
                return f"Not yet: for {(pc, pr, rc, rr, beta)} expected {want:.6f}, got {got:.6f}."
        return None

    return _verdict(check, quiet)


def check_failing_size(fn: Callable[[float, list], int], quiet: bool = False) -> bool:
    """``fn(capacity_bits, sizes)``: the smallest number of facts in ``sizes`` whose pairs
    need more bits than ``capacity_bits`` to be ranked right (log2 N!), or None if none."""

    def check() -> str | None:
        for cap, sizes in ((3600.0, [64, 256, 1000]), (300.0, [16, 64, 128]),
                           (1e6, [64, 1000]), (700.0, [100, 128, 200])):  # fmt: skip
            got, want = _call(fn, cap, list(sizes)), reference_failing_size(cap, sizes)
            if got != want:
                if want is not None and got == min(
                    (n for n in sizes if n * 4 * math.log2(26) > cap), default=None
                ):
                    return ("Not yet: that counts the codes' content bits; winning a pair "
                            "needs only the codes' assignment to entities, log2(N!).")
                return (f"Not yet: capacity {cap:g} bits, sizes {sizes}: expected {want}, "
                        f"got {got}.")
        return None

    return _verdict(check, quiet)



