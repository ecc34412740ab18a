"""The project installs the way README says, and its metadata agrees with itself."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's
CONDA_NAMES = {"pytorch": "torch", "playwright-python": "playwright"}
CI_TORCH = "2.13.0"  # the reference machines' local CPU wheel (.ci/run)


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _spec(req: str) -> str:
    return req.split(";")[0].strip()[len(_name(req)):].strip()


def _conda(path: Path) -> tuple[dict[str, str], list[str]]:
    """A conda environment file's conda packages (PyPI name -> version spec) and pip lines."""
    env = yaml.safe_load(path.read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
            continue
        name = re.split(r"[<>=!~ ]", dep, maxsplit=1)[0]
        if name in ("python", "pip"):
            continue
        conda[CONDA_NAMES.get(name, name)] = dep[len(name):].split("=cpu")[0].strip()
    return conda, pip


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_files_match_pyproject_names_and_pins():
    """Students get the kernel-side requirements and JupyterLab (environment.yml), the dev
    tools come separately (environment-dev.yml); names are conda-forge's, ranges pyproject's,
    and torch is pinned to the version this project's CI installs."""
    meta = _pyproject()
    student, student_pip = _conda(ROOT / "environment.yml")
    core = {_name(r): _spec(r) for r in meta["dependencies"] + meta["optional-dependencies"]["lab"]}
    assert set(student) == set(core)
    for name, spec in core.items():
        want = f"={CI_TORCH}" if name == "torch" else spec
        assert student[name] == want, (name, student[name], want)
    assert student_pip == ["-e ."]
    dev, dev_pip = _conda(ROOT / "environment-dev.yml")
    extras = {_name(r): _spec(r) for r in meta["optional-dependencies"]["dev"]
              if not r.startswith("lora_lab")}  # fmt: skip
    assert dev == extras
    assert dev_pip == ["-e .[dev]"]


def _readme_block(heading: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split(heading, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [c.strip() for c in block.strip().splitlines() if c.strip()]


def test_readme_quickstart_installs_cpu_torch_first_and_ci_runs_the_test_command():
    first, second = _readme_block("## Quickstart")
    steps = [c.strip() for c in first.split("&&")]
    assert steps[0] == "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert steps[1].startswith("pip install -e") and steps[-1] == "lora-lab check"
    assert second == "lora-lab reproduce --quick"
    test_command = _readme_block("## Tests")[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
    assert f"torch=={CI_TORCH}" in ci
    assert ci.index(f"torch=={CI_TORCH}") < ci.index('-e ".[dev')
    assert '-e ".[dev,ray]"' in ci  # the Ray-equivalence test must run in CI, not be skipped


def test_fork_workflow_is_valid_and_runs_the_documented_commands():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "tests.yml").read_text())
    readme = (ROOT / "README.md").read_text()
    runs = {job: "\n".join(step.get("run", "") for step in spec["steps"])
            for job, spec in wf["jobs"].items()}  # fmt: skip
    assert set(runs) == {"quick", "full"}
    quick = 'python -m pytest -m "not browser and not notebooks"'
    assert quick in runs["quick"] and quick in readme
    assert "python -m pytest\n" in runs["full"] + "\n"
    for job in runs.values():  # CPU torch first, from PyTorch's CPU index
        assert job.index("download.pytorch.org/whl/cpu") < job.index("pip install -e")


def test_markers_are_declared_and_documented():
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    declared = {m.split(":")[0] for m in ini["markers"]}
    assert declared == {"slow", "notebooks", "browser"}
    tests = (ROOT / "README.md").read_text().split("## Tests", 1)[1]
    assert all(f"`{m}`" in tests for m in declared)


def test_license_and_citation():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"].startswith("1.2") and cff["version"] == _pyproject()["version"]
    refs = " ".join(str(r) for r in cff.get("references", []))
    assert "LoRA Without Regret" in refs and "10.64434/tml.20250929" in refs


def test_console_script_declared():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["scripts"]["lora-lab"] == "lora_lab.cli:main"


@pytest.mark.slow
def test_cli_info_runs():
    out = subprocess.run(
        [sys.executable, "-m", "lora_lab.cli", "info"], capture_output=True, text=True, check=True
    ).stdout
    assert "nano" in out and "small-moe" in out


def test_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is part of the dev extra and must be installed")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_package_data_covers_every_shipped_file():
    """data/ and notebooks/ sit at the top of the checkout and are mapped into the wheel
    (lora_lab/data, lora_lab/notebooks); every shipped file is declared package data."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in [("lora_lab.data", "data"), ("lora_lab.notebooks", "notebooks")]:
        assert setup["package-dir"][package] == folder
        patterns = setup["package-data"][package]
        files = [p.relative_to(ROOT / folder) for p in (ROOT / folder).rglob("*")
                 if p.is_file() and ".claims" not in p.parts]  # fmt: skip
        assert files
        uncovered = [f for f in files if not any(f.match(pat) for pat in patterns)]
        assert not uncovered, uncovered


def test_declared_packages_are_the_source_tree():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    source = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lora_lab").rglob(
        "__init__.py")}  # fmt: skip
    assert set(setup["packages"]) == source | {"lora_lab.data", "lora_lab.notebooks"}


@pytest.mark.slow
def test_wheel_installs_and_finds_its_data(tmp_path):
    """Build the wheel, install it into a fresh virtual environment (dependencies borrowed
    from this one, lora_lab itself only from the wheel) and, from outside the checkout, load
    a base, find the shipped warm start, read a shipped record, find the notebooks and
    write a sweep record to the user's work folder, never into the installed package."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(dist)], check=True,
                   capture_output=True)  # fmt: skip
    wheel = next(dist.glob("lora_lab-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())  # fmt: skip
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)  # fmt: skip
    here = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    (site / "borrowed_deps.pth").write_text(f"{here}\n")  # a plain path: no editable finder
    code = """
import json, sys, lora_lab, lora_lab.paths as p
from lora_lab.training import load_base
from lora_lab.sweeps.store import ResultStore
assert "site-packages" in lora_lab.__file__ and p.checkout_root() is None, lora_lab.__file__
from lora_lab.training.warm_start import shipped_matches
base = load_base("nano")
records = ResultStore(p.results_root() / "capacity").scan()[0]
nbs = sorted(q.name for q in p.notebooks_dir().glob("*.ipynb"))
store = ResultStore(p.results_root() / "capacity")
print(json.dumps({"data": str(p.data_dir()), "records": len(records), "notebooks": nbs,
                  "params": sum(t.numel() for t in base.parameters()),
                  "writes_to": str(store.folder), "work": str(p.work_dir()),
                  "warm_start_shipped": shipped_matches("tiny-arith")}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LORA_LAB_DATA")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("LORA_LAB_WORK", None)
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["data"].startswith(str(site)) and got["data"].endswith("lora_lab/data")
    assert got["records"] > 0 and got["params"] > 0 and got["warm_start_shipped"]
    assert "00_lora_from_the_inside.ipynb" in got["notebooks"]
    assert got["writes_to"].startswith(str(tmp_path / "cache" / "lora_lab"))


@pytest.mark.slow
def test_readme_findings_table_docs_and_figures_are_generated_from_the_records():
    """README's findings section (a table and one figure per finding), docs/findings.md and
    the figures are computed from the shipped records, never typed: regenerate them with
    `lora-lab summary --write README.md`. Each figure carries the digest of the records
    it was drawn from, so a figure older than its records fails here."""
    from PIL import Image

    from lora_lab.findings import (
        DETAILS,
        FIGURES,
        details_markdown,
        figure_name,
        headlines,
        readme_summary,
        records_digest,
        summary_markdown,
    )

    rows = headlines()
    assert {h.status for h in rows} <= {"holds", "does not hold", "not resolved",
                                        "not testable in this design"}  # fmt: skip
    assert readme_summary(ROOT / "README.md") == summary_markdown(rows).strip()
    assert (ROOT / DETAILS).read_text() == details_markdown()
    for h in rows:
        path = ROOT / FIGURES / figure_name(h)
        assert path.exists(), path
        if h is next(r for r in rows if r.notebook == h.notebook):
            stamp = Image.open(path).text.get("Source", "")
            assert stamp == f"lora_lab {records_digest(h)}", (path.name, "stale: regenerate")


SLOW_TO_IMPORT = ("peft", "nbformat", "papermill", "ray", "jupyter_server")


def test_test_modules_import_slow_libraries_inside_the_tests_that_use_them():
    """Every test worker collects every test module, so a slow import at a module's top
    (peft, nbformat's jsonschema: 3-8 s each on a 2-core machine) is paid once per worker;
    inside the tests it is paid only where they run (README, "Parallel")."""
    import ast

    top = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            top += [f"{path.name}: {n}" for n in names if n.split(".")[0] in SLOW_TO_IMPORT]
    assert not top, top
