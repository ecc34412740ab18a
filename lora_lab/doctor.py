"""``lora-lab check``: is this machine ready for the course? One line per check, with a fix.

An instructor runs it before a workshop, a student when something looks wrong. Each check
is a small function returning a :class:`Check`; its inputs can be passed in, so a test can
drive every failure path without breaking the machine it runs on.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"
STEP_LIMIT_S = 5.0  # a training step slower than this makes the live panels unusable


@dataclass(frozen=True)
class Check:
    """One outcome: ``status`` is "OK", "FAIL" or "SKIP"; ``fix`` says what to do on FAIL."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.status}] {self.name}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.status == "FAIL" and self.fix else "")


def _ok(name: str, detail: str) -> Check:
    return Check(name, "OK", detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "FAIL", detail, fix)


def check_python(version: tuple[int, int] = sys.version_info[:2],
                 requires: str | None = None) -> Check:  # fmt: skip
    """Python within the package's ``requires-python``."""
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(requires or metadata.metadata("lora_lab")["Requires-Python"] or "")
    text = f"{version[0]}.{version[1]}"
    if spec.contains(f"{text}.0"):
        return _ok("python", f"Python {platform.python_version()} ({spec or 'any'})")
    return _fail("python", f"Python {text} is outside lora_lab's range {spec}",
                 f"install a Python in {spec} and create a new virtual environment with it")


def check_requirements(requirements: Iterable[str] | None = None,
                       version_of: Callable[[str], str] = metadata.version) -> Check:  # fmt: skip
    """Every required package installed, at a version in its range."""
    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in (requirements if requirements is not None
                                     else metadata.requires("lora_lab") or [])]  # fmt: skip
    problems = []
    reqs = [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]
    for req in reqs:  # an extra's requirements are left out: not needed to run the notebooks
        try:
            have = version_of(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req.name} missing")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req.name} {have} not in {req.specifier}")
    if problems:
        return _fail("requirements", "; ".join(problems),
                     "pip install " + " ".join(f'"{p.split()[0]}"' for p in problems)
                     + " (see README's install section for torch)")  # fmt: skip
    return _ok("requirements", f"{len(reqs)} requirements satisfied")


def check_torch() -> Check:
    """torch's build (CPU or CUDA) and the threads lora_lab will use, with the reason."""
    import torch

    from lora_lab.threads import choose_threads, usable_cpus

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    device = (f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available()
              else "no GPU: runs on the CPU")  # fmt: skip
    try:
        threads, why = choose_threads()
    except ValueError as bad:
        return _fail("torch", str(bad), "unset it or give a positive number, e.g. "
                     "export LORA_LAB_THREADS=1")  # fmt: skip
    return _ok("torch", f"torch {torch.__version__} ({build} build; {device}); "
               f"{usable_cpus()} usable CPUs, {threads} thread(s): {why}")  # fmt: skip


def check_widgets(search: Iterable[str | Path] | None = None) -> Check:
    """The ipywidgets front end (JupyterLab extension) where the Jupyter server looks."""
    if search is None:
        from jupyter_core.paths import jupyter_path

        search = jupyter_path("labextensions")
    folders = [Path(p) for p in search]
    for folder in folders:
        if (folder / WIDGETS_EXTENSION / "package.json").is_file():
            return _ok("widgets", f"{WIDGETS_EXTENSION} in {folder}")
    return _fail(
        "widgets", f"no {WIDGETS_EXTENSION} in {', '.join(map(str, folders)) or 'no folders'}: "
        "the panels would show as text",
        "pip install jupyterlab_widgets in the environment that runs the Jupyter *server* "
        "(on a hub, ask its admin), then restart the server",
    )  # fmt: skip


Runner = Callable[..., subprocess.CompletedProcess]


def check_kernel(name: str = "python3", run: Runner = subprocess.run) -> Check:
    """The Jupyter kernel the notebooks use exists and imports lora_lab."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return _fail("kernel", f"no Jupyter kernel named {name!r}",
                     f"python -m ipykernel install --user --name {name}")  # fmt: skip
    exe = spec.argv[0]
    if exe in ("python", "python3"):  # jupyter_client launches these as the server's Python
        exe = sys.executable
    try:
        done = run([exe, "-c", "import lora_lab, sys; print(lora_lab.__version__, sys.prefix)"],
                   capture_output=True, text=True, timeout=120)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        done = subprocess.CompletedProcess([exe], 1, "", str(e))
    if done.returncode != 0:
        return _fail("kernel", f"kernel {name!r} ({exe}) cannot import lora_lab",
                     f"{exe} -m pip install lora_lab, or register this environment: "
                     f"python -m ipykernel install --user --name {name}")  # fmt: skip
    version, _, prefix = done.stdout.strip().partition(" ")
    return _ok("kernel", f"kernel {name!r} imports lora_lab {version} from {prefix}")


def check_work_dir(folder: Path | None = None) -> Check:
    """The work folder (sweeps, bases, reports) exists or can be made, and is writable."""
    from lora_lab.paths import shipped_read_only, work_dir

    folder = Path(folder) if folder is not None else work_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".check-"):
            pass
    except OSError as e:
        return _fail("work folder", f"{folder} is not writable ({e.strerror or e})",
                     "point LORA_LAB_WORK at a folder you own, e.g. "
                     "export LORA_LAB_WORK=$HOME/lora_lab_work")  # fmt: skip
    mode = "shipped records read-only" if shipped_read_only() else "source checkout"
    return _ok("work folder", f"{folder} writable ({mode})")


def check_bases(names: Iterable[str] = ("nano", "tiny")) -> Check:
    """The shipped pretrained bases load."""
    from lora_lab.paths import data_dir
    from lora_lab.training.pretrain import load_base

    loaded = []
    for name in names:
        try:
            load_base(name)
        except (OSError, ValueError, RuntimeError) as e:
            return _fail("bases", f"base {name!r} does not load from {data_dir()} ({e})",
                         "reinstall lora_lab (pip install --force-reinstall lora_lab), or in a "
                         "checkout: git lfs pull / git checkout data/")  # fmt: skip
        loaded.append(name)
    return _ok("bases", f"{', '.join(loaded)} load from {data_dir()}")


def check_step(limit_s: float = STEP_LIMIT_S, steps: int = 3) -> Check:
    """A short LoRA run on ``nano``: the time per step, which must stay under ``limit_s``."""
    from lora_lab.lora import LoraConfig
    from lora_lab.tasks import make_task
    from lora_lab.training.pretrain import load_base
    from lora_lab.training.sft import train

    task = make_task("facts", n_entities=16)
    t0 = time.perf_counter()
    result = train(load_base("nano"), task.train, LoraConfig(r=4), lr=1e-3, steps=steps,
                   batch_size=8, evals_per_decade=1, eval_limit=8, progress=False,
                   keep_model=False)  # fmt: skip
    per_step = (time.perf_counter() - t0) / steps
    if result.diverged or per_step > limit_s:
        why = "diverged" if result.diverged else f"{per_step:.1f} s per step > {limit_s:.0f} s"
        return _fail("training step", why,
                     "close other heavy programs, or set LORA_LAB_THREADS=1 if several "
                     "kernels share this machine; lora-lab info shows the threads")  # fmt: skip
    return _ok("training step", f"{per_step:.2f} s per LoRA step on nano (limit {limit_s:.0f} s)")


CHECKS: dict[str, Callable[..., Check]] = {
    "python": check_python,
    "requirements": check_requirements,
    "torch": check_torch,
    "widgets": check_widgets,
    "kernel": check_kernel,
    "work": check_work_dir,
    "bases": check_bases,
    "step": check_step,
}


def run_checks(skip: set[str] = frozenset(), kernel: str = "python3",
               echo: Callable[[str], None] = print) -> list[Check]:  # fmt: skip
    """Run every check not in ``skip`` (names: the keys of :data:`CHECKS`), printing each
    line as it completes; a check that raises is a FAIL with its error, not a traceback."""
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)}; known: {sorted(CHECKS)}")
    echo(f"lora_lab check ({os.uname().nodename if hasattr(os, 'uname') else platform.node()})")
    results = []
    for name, fn in CHECKS.items():
        if name in skip:
            result = Check(name, "SKIP", "skipped (--skip)")
        else:
            try:
                result = fn(name=kernel) if name == "kernel" else fn()
            except Exception as e:  # noqa: BLE001 - a broken environment is what we report
                result = _fail(name, f"{type(e).__name__}: {e}",
                               "see the message; lora-lab check --skip " + name + " to go on")
        echo(result.line())
        results.append(result)
    return results
