"""The exercises' answers, for instructors: one ``reference_*`` function per checker in
:mod:`lora_lab.exercises` (``check_X`` is answered by ``reference_X``, or the name its
checker's docstring gives). Students never see these in a notebook cell: the checkers use
them to compute what is expected, and ``tests/test_exercises.py`` proves each checker
accepts its answer and rejects a wrong one.
"""

# ruff: noqa: N803 - the maths' names (W, A, B)
from __future__ import annotations

import math

import numpy as np

from lora_lab.sweeps.lr_search import LRSearch


def reference_lora_forward(x, W, A, B, alpha, r):
    return x @ W.T + (alpha / r) * (x @ A.T) @ B.T


def reference_bits_in_facts(n_facts):
    return n_facts * 4 * math.log2(26)


def reference_out_of_room(n_facts, trainable_params, bits_per_param):
    return trainable_params * bits_per_param < 0.75 * reference_bits_in_facts(n_facts)


def reference_parabola_optimum(lrs, losses):
    x = np.log(np.asarray(lrs, float))
    a, b, _ = np.polyfit(x, np.asarray(losses, float), 2)
    return float(np.exp(-b / (2 * a)))


def reference_is_interior(lrs, losses):
    i = int(np.argmin(losses))
    if i == 0 or i == len(lrs) - 1:
        return False
    step = 10 ** (1 / 6) * 1.01
    return lrs[i] / lrs[i - 1] <= step and lrs[i + 1] / lrs[i] <= step


def reference_lr_exponent(batch_sizes, best_lrs):
    return float(np.polyfit(np.log(batch_sizes), np.log(best_lrs), 1)[0])


def reference_paired_gap(lora_by_seed, full_by_seed):
    common = sorted(set(lora_by_seed) & set(full_by_seed))
    return sum(lora_by_seed[s] - full_by_seed[s] for s in common) / len(common)


def reference_lora_param_count(d_in, d_out, r):
    return r * (d_in + d_out)


def reference_matching_rank(budget, params_per_rank):
    return max(1, round(budget / params_per_rank))


def reference_flop_ratio(n, r):
    return (2 * n * n + 6 * n * r) / (3 * n * n)


def reference_adam_bytes(trainable):
    return 12 * trainable


def reference_group_advantages(rewards):
    mean = sum(rewards) / len(rewards)
    return [r - mean for r in rewards]


def reference_advantage_bits(correct, group_size):
    p = correct / group_size
    if p in (0.0, 1.0):
        return 0.0
    return group_size * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def reference_next_lrs(lrs, losses):
    return LRSearch().next_lrs(dict(zip(lrs, losses)))


def reference_ratio_interval(lo_a, hi_a, lo_b, hi_b):
    lo = lo_a / hi_b if hi_b > 0 and math.isfinite(hi_b) else 0.0
    hi = hi_a / lo_b if lo_b > 0 else math.inf
    return (lo, hi)


def reference_alpha_exponent(alphas, best_lrs):
    return math.log(best_lrs[1] / best_lrs[0]) / math.log(alphas[1] / alphas[0])


def reference_predict_ratio(ratio_at_32, exponent, alpha):
    return ratio_at_32 * (alpha / 32.0) ** exponent


def reference_dpo_loss(pc, pr, rc, rr, beta):
    h = (pc - rc) - (pr - rr)
    return math.log1p(math.exp(-beta * h))


def reference_failing_size(capacity_bits, sizes):
    need = {n: math.lgamma(n + 1) / math.log(2) for n in sizes}
    beyond = [n for n in sorted(sizes) if need[n] > capacity_bits]
    return beyond[0] if beyond else None
