"""``lora-lab`` command line: demo, pretrain, sweep, experiments, reproduce, info."""

from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

from lora_lab._version import __version__
from lora_lab.findings import EXPERIMENTS, get_experiment, summary_markdown, write_summary
from lora_lab.lora import LoraConfig
from lora_lab.model import PRESETS, build_model, count_parameters, read_model_metadata
from lora_lab.paths import base_path, results_root
from lora_lab.reproduce import reproduce
from lora_lab.sweeps.executors import EXECUTORS
from lora_lab.sweeps.experiment import results_dir
from lora_lab.sweeps.migrate import migrate_store
from lora_lab.sweeps.runner import run_sweep
from lora_lab.sweeps.store import ResultStore
from lora_lab.tasks import make_task
from lora_lab.training.methods import FullFT
from lora_lab.training.pretrain import available_bases, load_base, pretrain
from lora_lab.training.sft import train


def cmd_demo(args: argparse.Namespace) -> int:
    """Fine-tune the nano base with LoRA and FullFT for a few dozen steps and compare."""
    torch.set_num_threads(args.threads)
    if "nano" in available_bases():
        base, origin = load_base("nano"), "shipped pretrained base nano"
    else:
        base, origin = build_model("nano"), "randomly initialised model (no shipped base found)"
    task = make_task("facts", n_entities=200)
    print(
        f"lora_lab demo: {origin}; task: {task.train.describe()['examples']} facts "
        f"({task.train.info_bits:.0f} bits)"
    )
    runs = {
        "FullFT": train(
            base,
            task.train,
            FullFT(),
            lr=args.full_lr,
            steps=args.steps,
            eval_data=task.extra["recall"],
            progress=not args.quiet,
        ),
        f"LoRA r={args.rank}": train(
            base,
            task.train,
            LoraConfig(r=args.rank),
            lr=args.lora_lr,
            steps=args.steps,
            eval_data=task.extra["recall"],
            progress=not args.quiet,
        ),
    }
    print(f"{'method':<12}{'lr':>9}{'trainable':>12}{'loss start':>12}{'loss end':>10}{'s':>7}")
    for name, r in runs.items():
        start = r.curves.eval_loss.iloc[0]
        print(
            f"{name:<12}{r.config['lr']:>9.0e}{r.trainable_params:>12,}{start:>12.3f}"
            f"{r.final_loss:>10.3f}{r.wall_time_s:>7.1f}"
        )
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    meta = pretrain(
        args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        out=args.out,
    )
    print(
        f"saved {args.out or base_path(args.preset)}: final eval loss "
        f"{meta['final_eval_loss']:.4f} nats/char after {meta['steps']} steps "
        f"in {meta['wall_time_s']:.0f} s"
    )
    return 0


def _device_name() -> str:
    return f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"


def cmd_info(args: argparse.Namespace) -> int:
    print(f"lora_lab {__version__}, torch {torch.__version__}, Python {platform.python_version()}")
    print(f"device: {_device_name()}, {torch.get_num_threads()} threads")
    shipped = set(available_bases())
    print("presets:")
    for name, cfg in PRESETS.items():
        n = count_parameters(build_model(cfg))
        line = f"  {name:<10} {n:>10,} params  layers={cfg.n_layer} d={cfg.d_model}"
        if cfg.is_moe:
            line += f" experts={cfg.n_experts} top_k={cfg.top_k}"
        if name in shipped:
            meta = read_model_metadata(base_path(name))
            line += f"  base: eval loss {meta['final_eval_loss']:.3f} ({meta['steps']} steps)"
        print(line)
    results = {}
    print(f"shipped results ({results_root()}):")
    for name, exp in EXPERIMENTS.items():
        done = len(ResultStore(results_dir(name)).done_keys())
        results[name] = done
        print(f"  {name:<10} {done:>4} / {len(exp.specs('full'))} runs")
    if args.json:
        print(json.dumps({"version": __version__, "bases": sorted(shipped), "results": results}))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    exp = get_experiment(args.name)
    summary = run_sweep(
        exp, args.grid, jobs=args.jobs, root=args.out, executor=args.executor, address=args.address
    )
    print(summary)
    for key, err in summary.failed.items():
        print(f"  failed {key}: {err}", file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    for name, exp in EXPERIMENTS.items():
        done = len(ResultStore(results_dir(name)).done_keys())
        print(
            f"{name:<12} {exp.base:<10} {exp.task:<9} full {done}/{len(exp.specs('full'))} done, "
            f"ci {len(exp.specs('ci'))} runs  {exp.description}"
        )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """What the shipped records say about each finding (README's section is generated)."""
    if args.write:
        changed = write_summary(args.write)
        print(f"{args.write}: findings summary {'updated' if changed else 'already current'}")
    else:
        print(summary_markdown())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Re-key run records written before typed specs (lora_lab < 0.2)."""
    moved = migrate_store(args.folder, dry_run=args.dry_run)
    verb = "would re-key" if args.dry_run else "re-keyed"
    print(f"{args.folder}: {verb} {len(moved)} records")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    index = reproduce(quick=args.quick, out=args.out, timeout=args.timeout)
    print(f"executed notebooks and index: {index}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora-lab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="LoRA vs FullFT on the nano base, a few dozen steps")
    d.add_argument("--steps", type=int, default=60)
    d.add_argument("--rank", type=int, default=8)
    d.add_argument("--full-lr", type=float, default=1e-3)
    d.add_argument("--lora-lr", type=float, default=3e-3)
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("pretrain", help="pretrain a base model on the synthetic corpus")
    t.add_argument("--preset", required=True)
    t.add_argument("--steps", type=int, default=None, help="default: the preset's budget")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--out", default=None, help="default: lora_lab/data/base/PRESET")
    t.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("sweep", help="run an experiment's grid (resumable)")
    s.add_argument("name")
    s.add_argument("--grid", default="full", choices=["full", "ci"])
    s.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    s.add_argument("--out", default=None, help="results root (default: the shipped results)")
    s.add_argument(
        "--executor",
        default="process",
        choices=EXECUTORS,
        help="where runs happen: local processes (default), serially here, or on Ray",
    )
    s.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (e.g. auto or ray://HOST:10001); default: a local Ray",
    )
    s.set_defaults(func=cmd_sweep)

    sm = sub.add_parser("summary", help="what the shipped records say, computed from them")
    sm.add_argument("--write", metavar="FILE", help="rewrite FILE's findings section (README.md)")
    sm.set_defaults(func=cmd_summary)

    m = sub.add_parser("migrate", help="re-key records written before typed specs")
    m.add_argument("folder")
    m.add_argument("--dry-run", action="store_true", help="only say what would change")
    m.set_defaults(func=cmd_migrate)

    ls = sub.add_parser("experiments", help="list experiments and how much of each is done")
    ls.set_defaults(func=cmd_list)

    r = sub.add_parser("reproduce", help="execute every notebook with papermill into reports/")
    r.add_argument("--quick", action="store_true", help="inject the ci preset")
    r.add_argument("--out", default="reports")
    r.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    r.set_defaults(func=cmd_reproduce)

    i = sub.add_parser("info", help="versions, device, presets and shipped bases")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"lora-lab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
