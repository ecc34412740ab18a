"""Per-step time of FullFT vs LoRA (ours and PEFT's) on each dense preset.

    python benchmarks/step_time.py [--threads 2] [--batch 32] [--seq 128] [--repeats 10]

Prints a Markdown table: ms per optimizer step (forward + backward + AdamW), tokens/s, the
ratio to FullFT's step, and FullFT's model-FLOPs utilisation (6 * params * tokens per step
over the machine's measured fp32 matmul peak). A benchmark, not a test: timings on shared
machines are noisy, so read the ratios measured within one run. The post's FLOP count says
a LoRA step costs ~2/3 of a FullFT step; what a straightforward implementation shows on a
small CPU model is what this script measures.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from lora_lab import LoraConfig, build_model, inject_lora
from lora_lab.lora import TARGET_PRESETS
from lora_lab.model import PRESETS, count_parameters


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best observed fp32 GFLOP/s of an n x n matmul (the machine's practical peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def step_time(model: torch.nn.Module, batch: torch.Tensor, repeats: int) -> float:
    """Median seconds per training step after two warm-up steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def variants(base: torch.nn.Module):
    yield "FullFT", copy.deepcopy(base)
    for r in (1, 8, 64):
        yield f"LoRA r={r}", inject_lora(copy.deepcopy(base), LoraConfig(r=r))
    try:
        import peft
    except ImportError:
        return
    cfg = peft.LoraConfig(r=8, lora_alpha=32, target_modules=list(TARGET_PRESETS["all"]))
    yield "PEFT r=8", peft.get_peft_model(copy.deepcopy(base), cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--presets", nargs="*", default=[n for n, c in PRESETS.items() if not c.is_moe])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = matmul_peak_gflops()
    tokens = args.batch * args.seq
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch} x {args.seq} "
        f"tokens; fp32 matmul peak {peak:.0f} GFLOP/s\n"
    )
    print("| preset | params | method | trainable | ms/step | tokens/s | x FullFT | FullFT MFU |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name in args.presets:
        base = build_model(name)
        n_params = count_parameters(base)
        batch = torch.randint(0, base.config.vocab_size, (args.batch, args.seq + 1))
        full_t = None
        for label, model in variants(base):
            t = step_time(model, batch, args.repeats)
            full_t = full_t or t
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            mfu = f"{6 * n_params * tokens / t / 1e9 / peak:.0%}" if label == "FullFT" else ""
            print(
                f"| {name} | {n_params:,} | {label} | {trainable:,} | {1000 * t:.1f} | "
                f"{tokens / t:,.0f} | {t / full_t:.2f} | {mfu} |"
            )


if __name__ == "__main__":
    main()
