"""``lora-lab`` command line: demo, pretrain, sweep, verify, experiments, reproduce, analyze,
check, notebooks, grade, info."""

from __future__ import annotations

import argparse
import sys

# Only the standard library at module level: ``lora-lab --help`` (and every command's) must
# answer in well under a second, so each command imports what it needs when it runs.
EXECUTORS = ("serial", "process", "ray")  # lora_lab.sweeps.executors.EXECUTORS (a test checks)
ANALYZE_FORMATS = ("auto", "csv", "jsonl", "wandb", "trainer", "lora_lab")  # importers.FORMATS


def cmd_demo(args: argparse.Namespace) -> int:
    """Fine-tune the nano base with LoRA and FullFT for a few dozen steps and compare."""
    from lora_lab.lora import LoraConfig
    from lora_lab.model import build_model
    from lora_lab.tasks import make_task
    from lora_lab.threads import configure_threads
    from lora_lab.training.methods import FullFT
    from lora_lab.training.pretrain import available_bases, load_base
    from lora_lab.training.sft import train

    configure_threads(args.threads)
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
        end = "diverged" if r.diverged else f"{r.final_loss:.3f}"
        print(
            f"{name:<12}{r.config['lr']:>9.0e}{r.trainable_params:>12,}{start:>12.3f}"
            f"{end:>10}{r.wall_time_s:>7.1f}"
        )
        if r.diverged:
            print(f"  {name} diverged at step {int(r.final['steps_done'])}: lower its LR")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from lora_lab.paths import base_path, shipped_read_only, work_dir
    from lora_lab.threads import configure_threads
    from lora_lab.training.pretrain import pretrain

    configure_threads(args.threads)
    if args.replace_shipped and args.out:
        raise ValueError("give --out or --replace-shipped, not both")
    if args.replace_shipped and shipped_read_only():
        raise ValueError("the shipped bases are read-only in an installed package; "
                         "write to your work folder (the default) or --out")
    out = base_path(args.preset) if args.replace_shipped else (
        args.out or work_dir() / "bases" / args.preset
    )  # fmt: skip
    meta = pretrain(
        args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        out=out,
    )
    print(
        f"saved {out}: final eval loss "
        f"{meta['final_eval_loss']:.4f} nats/char after {meta['steps']} steps "
        f"in {meta['wall_time_s']:.0f} s"
    )
    return 0


def cmd_warm_start(args: argparse.Namespace) -> int:
    import time

    import torch

    from lora_lab.model import load_model
    from lora_lab.paths import shipped_read_only, warm_start_path
    from lora_lab.training.warm_start import (
        WARM_STARTS,
        build_warm_start,
        cache_path,
        write_warm_start,
    )  # fmt: skip

    if args.name not in WARM_STARTS:
        raise ValueError(f"unknown warm start {args.name!r}; known: {sorted(WARM_STARTS)}")
    if args.replace_shipped and shipped_read_only():
        raise ValueError("the shipped warm starts are read-only in an installed package; "
                         "leave out --replace-shipped to write to your work folder")  # fmt: skip
    shipped = warm_start_path(args.name)
    out = shipped.with_suffix("") if args.replace_shipped else cache_path(args.name)
    t = time.perf_counter()
    model = build_warm_start(args.name, progress=not args.quiet)
    before = load_model(shipped).state_dict() if shipped.exists() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = write_warm_start(args.name, model, out)
    print(f"saved {out}: held-out loss {meta['held_out_loss']:.4f} nats/token, "
          f"built in {time.perf_counter() - t:.0f} s")  # fmt: skip
    if before is not None:
        same = all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        print(f"bit for bit the shipped copy ({shipped}): {'yes' if same else 'NO'}")
    return 0


def _device_name() -> str:
    import torch

    return f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"


def cmd_info(args: argparse.Namespace) -> int:
    import json
    import platform

    import torch

    from lora_lab._version import __version__
    from lora_lab.findings import EXPERIMENTS
    from lora_lab.model import PRESETS, build_model, count_parameters, read_model_metadata
    from lora_lab.paths import base_path, results_root
    from lora_lab.sweeps.experiment import results_dir
    from lora_lab.sweeps.store import ResultStore
    from lora_lab.threads import apply_default_threads, choose_threads
    from lora_lab.training.pretrain import available_bases
    from lora_lab.training.warm_start import WARM_STARTS

    apply_default_threads()  # report the count work here would use, not torch's default

    shipped = set(available_bases())
    presets = {}
    for name, cfg in PRESETS.items():
        entry = {"params": count_parameters(build_model(cfg)), "layers": cfg.n_layer,
                 "d_model": cfg.d_model, "experts": cfg.n_experts}  # fmt: skip
        if name in shipped:
            meta = read_model_metadata(base_path(name))
            entry["base"] = {"final_eval_loss": meta["final_eval_loss"], "steps": meta["steps"]}
        presets[name] = entry
    warm_starts = {name: recipe.to_dict() for name, recipe in WARM_STARTS.items()}
    results = {
        name: {
            "done": len(ResultStore(results_dir(name)).done_keys()),
            "grid": len(exp.specs("full")),
        }  # fmt: skip
        for name, exp in EXPERIMENTS.items()
    }
    if args.json:  # JSON only, so it can be piped
        print(json.dumps({"version": __version__, "torch": torch.__version__,
                          "device": _device_name(), "threads": torch.get_num_threads(),
                          "bases": sorted(shipped), "presets": presets,
                          "warm_starts": warm_starts, "results": results}))  # fmt: skip
        return 0
    print(f"lora_lab {__version__}, torch {torch.__version__}, Python {platform.python_version()}")
    print(f"device: {_device_name()}, {torch.get_num_threads()} threads ({choose_threads()[1]})")
    print("presets:")
    for name, e in presets.items():
        line = f"  {name:<10} {e['params']:>10,} params  layers={e['layers']} d={e['d_model']}"
        if e["experts"]:
            line += f" experts={e['experts']} top_k={PRESETS[name].top_k}"
        if "base" in e:
            line += (
                f"  base: eval loss {e['base']['final_eval_loss']:.3f} ({e['base']['steps']} steps)"
            )
        print(line)
    print("warm starts (a base after a short SFT phase; shipped, or built on first use from "
          "a changed recipe):")
    for name, w in warm_starts.items():
        print(f"  {name:<10} {w['base']} + {w['steps']} SFT steps x {w['batch_size']} on "
              f"{w['task']} at lr {w['lr']:g}")  # fmt: skip
    print(f"shipped results ({results_root()}):")
    for name, r in results.items():
        print(f"  {name:<12} {r['done']:>4} runs ({r['grid']} in the starting grid)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from lora_lab.findings import get_experiment
    from lora_lab.sweeps.runner import run_sweep

    exp = get_experiment(args.name)
    compile = {"auto": "auto", "on": True, "off": False}[args.compile]
    summary = run_sweep(exp, args.grid, jobs=args.jobs, root=args.out, executor=args.executor,
                        address=args.address, compile=compile)  # fmt: skip
    print(summary)
    for key, err in summary.failed.items():
        print(f"  failed {key}: {err}", file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Rerun records and say whether their numbers come back."""
    from lora_lab.sweeps.verify import verify_records

    table = verify_records(args.records, fast=args.fast)
    for r in table.itertuples():
        print(f"{r.outcome:<23} {r.label} lr {r.lr:.3g} seed {r.seed}: recorded {r.recorded:.6f}, "
              f"rerun {r.rerun:.6f} ({r.difference:+.2e}; seed spread {r.seed_spread:.2e}); "
              f"code {r.code}  [{r.record}]")  # fmt: skip
    return 1 if (table.outcome == "differs").any() else 0


def cmd_list(args: argparse.Namespace) -> int:
    from lora_lab.findings import EXPERIMENTS
    from lora_lab.sweeps.experiment import results_dir
    from lora_lab.sweeps.store import ResultStore

    for name, exp in EXPERIMENTS.items():
        done = len(ResultStore(results_dir(name)).done_keys())
        ci = f"ci {len(exp.specs('ci'))} runs" if "ci" in exp.grids else "no ci grid"
        print(
            f"{name:<12} {exp.base:<10} {exp.task:<9} full {done}/{len(exp.specs('full'))} done, "
            f"{ci}  {exp.description}"
        )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """What the shipped records say about each finding (README's section is generated)."""
    from lora_lab.findings import summary_markdown, write_summary

    if args.write:
        changed = write_summary(args.write)
        print(f"{args.write}: findings summary {'updated' if changed else 'already current'}")
    else:
        print(summary_markdown())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Re-key run records written before typed specs (lora_lab < 0.2)."""
    from lora_lab.sweeps.migrate import migrate_store

    moved = migrate_store(args.folder, dry_run=args.dry_run)
    verb = "would re-key or rewrite" if args.dry_run else "re-keyed or rewrote"
    print(f"{args.folder}: {verb} {len(moved)} records")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from lora_lab.paths import reports_dir
    from lora_lab.reproduce import reproduce

    index = reproduce(quick=args.quick, out=args.out or reports_dir(), timeout=args.timeout,
                      kernel=args.kernel)  # fmt: skip
    print(f"executed notebooks and index: {index}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Is this machine ready for the course? One [OK] / [FAIL] line per check, with a fix."""
    from lora_lab.doctor import run_checks

    results = run_checks(skip=set(args.skip or ()), kernel=args.kernel)
    failed = [r for r in results if r.status == "FAIL"]
    print(f"{len(results) - len(failed)} of {len(results)} checks passed"
          + (f"; fix the {len(failed)} above" if failed else ": ready"))  # fmt: skip
    return 1 if failed else 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    """Copy the notebooks somewhere a user may write (a hub home, a course folder)."""
    from lora_lab.paths import copy_notebooks

    copied = copy_notebooks(args.dest, overwrite=args.overwrite)
    print(f"copied {len(copied)} notebooks to {args.dest}; open them with: jupyter lab {args.dest}")
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    """Collect the exercise outcomes recorded in executed notebooks into one table."""
    from lora_lab.grading import grade_notebooks

    table = grade_notebooks(args.notebooks)
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"{args.csv}: {len(table)} rows ({table.notebook.nunique()} notebooks)")
    else:
        print(table.to_string(index=False) if len(table) else "no exercise outcomes recorded")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Read a user's runs, analyse them as the notebooks do, write the report."""
    from lora_lab.own_runs import analyze, write_report

    mapping = dict(_mapping(m) for m in args.map or [])
    print(f"reading {len(args.paths)} source(s) ...", file=sys.stderr)
    result = analyze(args.paths, fmt=args.format, metric=args.metric,
                     higher_is_better=args.higher_better, mapping=mapping,
                     pattern=args.pattern, reference=args.reference,
                     margin=args.margin)  # fmt: skip
    t = result.table
    print(f"{len(t.runs)} runs, {len(t.labels)} methods ({', '.join(t.labels)}), metric "
          f"{t.metric}; reference {result.reference}; writing the report ...",
          file=sys.stderr)  # fmt: skip
    report = write_report(result, args.out)
    for line in result.to_markdown().split("## Verdicts", 1)[1].split("\n\n## ", 1)[0].strip(
    ).splitlines():
        print(line)
    if not result.next_runs.empty:
        print(f"next runs: {int(result.next_runs.runs.sum())} (see {args.out}/next_runs.csv)")
    print(f"report: {report}  summary: {report.parent / 'summary.md'}")
    return 0


def _mapping(text: str) -> tuple[str, str]:
    ours, sep, theirs = text.partition("=")
    if not sep or not ours.strip() or not theirs.strip():
        raise ValueError(f"--map takes OURS=THEIRS (e.g. lr=learning_rate), got {text!r}")
    return ours.strip(), theirs.strip()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" where there is a real default the help does not already name."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False) or "default" in text:
            return text
        return super()._get_help_string(action)


def _parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help_text, description=help_text, formatter_class=_HelpWithDefaults
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora-lab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = _parser(sub, "demo", "LoRA vs FullFT on the nano base, a few dozen steps")
    d.add_argument("--steps", type=_positive_int, default=60, help="optimizer steps per method")
    d.add_argument("--rank", type=_positive_int, default=8, help="LoRA rank")
    d.add_argument("--full-lr", type=_positive_float, default=1e-3, help="FullFT learning rate")
    d.add_argument("--lora-lr", type=_positive_float, default=3e-3, help="LoRA learning rate")
    d.add_argument(
        "--threads", type=_positive_int, default=None,
        help="torch threads (default: $LORA_LAB_THREADS, else $OMP_NUM_THREADS, else 1: safe on a "
        "busy machine)",
    )  # fmt: skip
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    t = _parser(sub, "pretrain", "pretrain a base model on the synthetic corpus")
    t.add_argument("--preset", required=True, help="model preset (lora-lab info lists them)")
    t.add_argument(
        "--steps", type=_positive_int, default=None, help="optimizer steps (default: the preset's)"
    )
    t.add_argument("--batch-size", type=_positive_int, default=32, help="sequences per step")
    t.add_argument("--lr", type=_positive_float, default=3e-3, help="peak learning rate")
    t.add_argument("--seed", type=int, default=0, help="initialisation and batch seed")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument(
        "--threads", type=_positive_int, default=None,
        help="torch threads (default: $LORA_LAB_THREADS, else $OMP_NUM_THREADS, else 1: safe on a "
        "busy machine)",
    )  # fmt: skip
    t.add_argument(
        "--out",
        default=None,
        help="where to write PRESET.safetensors/.json (default: reports/bases/PRESET in a "
        "checkout, so the shipped base is never overwritten by accident)",
    )
    t.add_argument(
        "--replace-shipped",
        action="store_true",
        help="write to the shipped base's path (data/base/PRESET) instead",
    )
    t.set_defaults(func=cmd_pretrain)

    ws = _parser(sub, "warm-start", "build a warm start (a base after a short fixed SFT "
                 "phase, e.g. tiny-arith) from its recipe; says if it equals the shipped copy")
    ws.add_argument("name", help="warm start (lora-lab info lists them)")
    ws.add_argument("--replace-shipped", action="store_true",
                    help="write the shipped copy (data/warm_starts/NAME) instead of the work "
                    "folder's cache")  # fmt: skip
    ws.add_argument("--quiet", action="store_true", help="no progress bar")
    ws.set_defaults(func=cmd_warm_start)

    s = _parser(sub, "sweep", "run an experiment's grid, resumably (skips finished runs)")
    s.add_argument("name", help="experiment (lora-lab experiments lists them)")
    s.add_argument("--grid", default="full", choices=["full", "ci"], help="which grid")
    s.add_argument("--jobs", type=_positive_int, default=2, help="worker processes / Ray CPUs")
    s.add_argument("--out", default=None, help="results root (default: the shipped results in a "
                   "source checkout, else results/ in your work folder; lora-lab check shows it)")
    s.add_argument(
        "--executor",
        default="process",
        choices=EXECUTORS,
        help="where runs happen: local processes, serially here, or on Ray",
    )
    s.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (e.g. auto or ray://HOST:10001); default: a local Ray",
    )
    s.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="train through torch.compile, graphs kept per worker across runs "
                   "(auto: when each worker has enough runs per shape family to earn its "
                   "compiles back and a C++ compiler is here; "
                   "records say whether they were compiled)")  # fmt: skip
    s.set_defaults(func=cmd_sweep)

    sm = _parser(sub, "summary", "what the shipped records say, computed from them")
    sm.add_argument("--write", metavar="FILE", help="rewrite FILE's findings section (README.md)")
    sm.set_defaults(func=cmd_summary)

    m = _parser(sub, "migrate", "re-key or rewrite records written by an older lora_lab")
    m.add_argument("folder", help="a results folder")
    m.add_argument("--dry-run", action="store_true", help="only say what would change")
    m.set_defaults(func=cmd_migrate)

    v = _parser(sub, "verify", "rerun records and compare their numbers (within float noise, "
                "within the seed spread, or not)")
    v.add_argument("records", nargs="+", metavar="RECORD",
                   help="record files (results/NAME/KEY.json) or whole results folders")
    v.add_argument("--fast", action="store_true",
                   help="rerun the fast way (LoRA through the fused layer): the numbers should "
                   "land within the seed spread")  # fmt: skip
    v.set_defaults(func=cmd_verify)

    ls = _parser(sub, "experiments", "list experiments and how much of each is done")
    ls.set_defaults(func=cmd_list)

    r = _parser(sub, "reproduce", "execute every notebook with papermill into reports/")
    r.add_argument("--quick", action="store_true", help="inject the ci preset")
    r.add_argument("--out", default=None,
                   help="output folder (default: reports/ in a checkout, else your work folder)")
    r.add_argument("--kernel", default="python3",
                   help="Jupyter kernel to execute with (a hub's own kernel name, e.g.)")
    r.add_argument("--timeout", type=_positive_int, default=1800, help="seconds per cell")
    r.set_defaults(func=cmd_reproduce)

    an = _parser(sub, "analyze", "analyse your own LoRA / FullFT sweeps: best LRs with their "
                 "intervals, LR ratios, verdicts, what to run next")
    an.add_argument("paths", nargs="+", metavar="PATH",
                    help="a CSV / JSON Lines table, a folder of Hugging Face Trainer outputs, "
                    "a W&B runs export or a lora_lab results folder")  # fmt: skip
    an.add_argument("--format", default="auto", choices=ANALYZE_FORMATS,
                    help="what PATH holds (auto tells all but wandb apart)")  # fmt: skip
    an.add_argument("--metric", default=None,
                    help="column or logged key to compare (default: eval_loss, final_loss, "
                    "loss or metric, whichever exists)")  # fmt: skip
    an.add_argument("--higher-better", action="store_true",
                    help="the metric is higher-is-better (accuracy, reward)")
    an.add_argument("--map", action="append", default=None, metavar="OURS=THEIRS",
                    help="read our column OURS (method, rank, target_modules, alpha, lr, seed, "
                    "label, step, diverged) from the file's THEIRS; repeatable")  # fmt: skip
    an.add_argument("--pattern", default=None,
                    help="regex with named groups (method, rank, lr, seed, ...) over Trainer "
                    "folder names")  # fmt: skip
    an.add_argument("--reference", default=None,
                    help="method the others are compared with (default: FullFT if present)")
    an.add_argument("--margin", type=_positive_float, default=None,
                    help="equivalence margin in the metric's units (none: never 'equivalent')")
    an.add_argument("--out", default="lora_lab_analysis",
                    help="folder for report.html, summary.md, runs.csv, next_runs.csv")
    an.set_defaults(func=cmd_analyze)

    ck = _parser(sub, "check", "is this machine ready? versions, torch build and threads, "
                 "widgets, kernel, work folder, bases, a timed training step")
    ck.add_argument("--kernel", default="python3", help="the kernel the notebooks will use")
    ck.add_argument("--skip", action="append", metavar="CHECK",
                    help="skip a check by name (repeatable), e.g. --skip step")
    ck.set_defaults(func=cmd_check)

    nb = _parser(sub, "notebooks", "copy the notebooks into DEST (they ship with the package)")
    nb.add_argument("dest", help="destination folder (created if missing)")
    nb.add_argument("--overwrite", action="store_true", help="replace notebooks already there")
    nb.set_defaults(func=cmd_notebooks)

    g = _parser(sub, "grade", "collect exercise outcomes from executed notebooks")
    g.add_argument("notebooks", nargs="+", metavar="NOTEBOOK",
                   help="executed .ipynb files or folders holding them")
    g.add_argument("--csv", default=None, help="write the table here (one row per notebook "
                   "and exercise) instead of printing it")
    g.set_defaults(func=cmd_grade)

    i = _parser(sub, "info", "versions, device, presets and shipped bases")
    i.add_argument("--json", action="store_true", help="print only JSON")
    i.set_defaults(func=cmd_info)
    return p


# What a user can fix (bad input, a missing file or extra, an unreachable cluster, a sweep
# whose code changed under it): one line and exit code 2. Anything else is a bug in
# lora_lab, and its traceback is what a bug report needs.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, ConnectionError)
LAZY_USER_ERRORS = (("lora_lab.sweeps.executors", "MissingExtraError"),
                    ("lora_lab.sweeps.runner", "CodeSkewError"))  # fmt: skip


def _is_user_error(e: BaseException) -> bool:
    """Whether ``e`` is one a user can fix. The engine's own error classes are looked up only
    if their module was imported (it was, if it raised), so ``--help`` stays torch-free."""
    kinds = list(USER_ERRORS)
    for module, name in LAZY_USER_ERRORS:
        if module in sys.modules:
            kinds.append(getattr(sys.modules[module], name))
    return isinstance(e, tuple(kinds))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:
        if not _is_user_error(e):
            raise
        print(f"lora-lab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
