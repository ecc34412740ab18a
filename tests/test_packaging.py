"""The project installs the way README says, and its metadata agrees with itself."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's
CONDA_NAMES = {"pytorch": "torch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_pyproject_dependencies():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in meta["dependencies"] + meta["optional-dependencies"]["dev"]}
    env = (ROOT / "environment.yml").read_text()
    deps_block = env.split("dependencies:", 1)[1].split("- pip:", 1)[0]  # conda part only
    listed = set()
    for line in deps_block.splitlines():
        m = re.match(r"\s+-\s+([A-Za-z0-9_.-]+)", line)
        if m and m.group(1) not in ("python", "pip"):
            listed.add(CONDA_NAMES.get(m.group(1).lower(), m.group(1).lower()))
    assert listed == wanted
    assert "-e .[dev]" in env


def test_readme_quickstart_and_ci_agree():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [c for c in block.strip().splitlines() if c.strip()]
    assert len(commands) == 2
    test_command = commands[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
    assert "torch==2.13.0" in ci
    assert ci.index("torch==2.13.0") < ci.index('-e ".[dev')
    assert '-e ".[dev,ray]"' in ci  # the Ray-equivalence test must run in CI, not be skipped


def test_console_script_declared():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["scripts"]["lora-lab"] == "lora_lab.cli:main"


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
    """Bases, records and samples live inside the package and are declared as package data,
    so an installed wheel (or a Ray worker) finds them where a checkout does."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = meta["tool"]["setuptools"]["package-data"]["lora_lab"]
    data = ROOT / "lora_lab" / "data"
    files = [p.relative_to(ROOT / "lora_lab") for p in data.rglob("*") if p.is_file()]
    assert files
    uncovered = [f for f in files if not any(f.match(pat) for pat in patterns)]
    assert not uncovered, uncovered


def test_readme_findings_section_is_generated_from_the_records():
    """README's numbers are computed from the shipped records, never typed: the section
    between the markers must equal `lora-lab summary` (regenerate with --write README.md)."""
    from lora_lab.findings import readme_summary, summary_markdown

    assert readme_summary(ROOT / "README.md") == summary_markdown().strip()
