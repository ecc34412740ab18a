"""Classroom edges: the setup doctor's every failure path, a shared hub's read-only shipped
data, copying the notebooks out, and a command line that answers before torch loads."""

import json
import os
import re
import subprocess
import sys

import pytest

from lora_lab import doctor
from lora_lab.cli import main


def test_python_outside_the_range_fails_with_a_fix():
    assert doctor.check_python((3, 11), ">=3.10").status == "OK"
    bad = doctor.check_python((3, 9), ">=3.10")
    assert bad.status == "FAIL" and "3.9" in bad.detail and "virtual environment" in bad.fix


def test_missing_or_old_requirements_fail_with_a_pip_line():
    versions = {"numpy": "1.20.0", "pandas": "2.2.0"}

    def version_of(name):
        if name not in versions:
            raise doctor.metadata.PackageNotFoundError(name)
        return versions[name]

    reqs = ["numpy>=1.24", "pandas>=2.0", "seaborn>=0.13", 'pytest>=7; extra == "dev"']
    bad = doctor.check_requirements(reqs, version_of)
    assert bad.status == "FAIL"
    assert "numpy 1.20.0 not in >=1.24" in bad.detail and "seaborn missing" in bad.detail
    assert "pytest" not in bad.detail  # an extra's requirement is not needed
    assert bad.fix.startswith('pip install "numpy" "seaborn"')
    assert doctor.check_requirements(reqs[1:2], version_of).status == "OK"


def test_malformed_thread_setting_fails(monkeypatch):
    monkeypatch.setenv("LORA_LAB_THREADS", "many")
    bad = doctor.check_torch()
    assert bad.status == "FAIL" and "LORA_LAB_THREADS" in bad.detail
    monkeypatch.setenv("LORA_LAB_THREADS", "1")
    ok = doctor.check_torch()
    assert ok.status == "OK" and "CPU" in ok.detail or "CUDA" in ok.detail


def test_widgets_front_end_missing_fails(tmp_path):
    bad = doctor.check_widgets([tmp_path])
    assert bad.status == "FAIL" and "jupyterlab_widgets" in bad.fix
    ext = tmp_path / doctor.WIDGETS_EXTENSION
    ext.mkdir(parents=True)
    (ext / "package.json").write_text("{}")
    assert doctor.check_widgets([tmp_path]).status == "OK"


def test_kernel_missing_or_without_lora_lab_fails():
    bad = doctor.check_kernel("no-such-kernel-xyz")
    assert bad.status == "FAIL" and "ipykernel install" in bad.fix

    def cannot_import(argv, **kw):
        return subprocess.CompletedProcess(argv, 1, "", "ModuleNotFoundError: lora_lab")

    bad = doctor.check_kernel("python3", run=cannot_import)
    assert bad.status == "FAIL" and "cannot import lora_lab" in bad.detail


def test_unwritable_work_folder_fails(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    bad = doctor.check_work_dir(blocked / "work")
    assert bad.status == "FAIL" and "LORA_LAB_WORK" in bad.fix
    assert doctor.check_work_dir(tmp_path / "work").status == "OK"


def test_missing_base_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_LAB_DATA", str(tmp_path))
    bad = doctor.check_bases(["nano"])
    assert bad.status == "FAIL" and "nano" in bad.detail and "reinstall" in bad.fix


def test_slow_training_step_fails():
    bad = doctor.check_step(limit_s=1e-9, steps=1)
    assert bad.status == "FAIL" and "s per step" in bad.detail and "LORA_LAB_THREADS" in bad.fix


def test_check_command_exits_nonzero_on_a_failure(monkeypatch, capsys):
    monkeypatch.setitem(doctor.CHECKS, "widgets", lambda: doctor.check_widgets([]))
    code = main(["check", "--skip", "step", "--skip", "bases", "--skip", "kernel"])
    out = capsys.readouterr().out
    assert code == 1 and "[FAIL] widgets" in out and "fix:" in out and "[SKIP] step" in out
    assert re.search(r"\[OK\] python: Python 3", out)
    assert main(["check", "--skip", "nonsense"]) == 2


def test_shipped_records_are_read_only_outside_a_checkout(tmp_path, monkeypatch):
    """As on a hub: a sweep writes to the user's mirror, reading sees shipped and own."""
    from lora_lab.paths import results_root
    from lora_lab.sweeps.store import ResultStore

    monkeypatch.setenv("LORA_LAB_READ_ONLY_DATA", "1")
    monkeypatch.setenv("LORA_LAB_WORK", str(tmp_path))
    store = ResultStore(results_root() / "capacity")
    assert store.shipped == results_root() / "capacity"
    assert store.folder == tmp_path / "results-own" / "capacity"
    shipped, _ = store.scan()
    key, rec = next(iter(shipped.items()))
    assert store.read(key) == rec
    mine = json.loads(json.dumps(rec))
    mine["result"]["wall_time_s"] = 123.0
    store.write(key, mine)  # the user's own record wins over the shipped one, never replaces it
    assert store.read(key)["result"]["wall_time_s"] == 123.0
    assert (tmp_path / "results-own" / "capacity" / f"{key}.json").exists()
    assert ResultStore(results_root() / "capacity").scan()[0][key]["result"]["wall_time_s"] == 123
    assert json.loads((results_root() / "capacity" / f"{key}.json").read_text()) == rec


def test_sweep_in_an_installed_package_writes_to_the_work_folder(tmp_path, monkeypatch, capsys):
    from lora_lab.paths import results_root

    monkeypatch.setenv("LORA_LAB_READ_ONLY_DATA", "1")
    monkeypatch.setenv("LORA_LAB_WORK", str(tmp_path))
    before = sorted((results_root()).glob("demo*"))
    assert main(["sweep", "demo", "--grid", "ci", "--jobs", "1"]) == 0
    assert list((tmp_path / "results").glob("demo-ci/*.json"))
    assert sorted((results_root()).glob("demo*")) == before
    assert main(["pretrain", "--preset", "nano", "--replace-shipped", "--steps", "1"]) == 2
    assert "read-only" in capsys.readouterr().err
    assert main(["warm-start", "tiny-arith", "--replace-shipped"]) == 2
    assert "read-only" in capsys.readouterr().err
    assert main(["warm-start", "tiny-arithmetic"]) == 2
    assert "known: ['tiny-arith']" in capsys.readouterr().err


def test_notebooks_command_copies_and_never_clobbers(tmp_path, capsys):
    from lora_lab.paths import notebooks_dir

    dest = tmp_path / "course"
    assert main(["notebooks", str(dest)]) == 0
    names = sorted(p.name for p in dest.glob("*.ipynb"))
    assert names == sorted(p.name for p in notebooks_dir().glob("*.ipynb"))
    (dest / names[0]).write_text("a student's work")
    assert main(["notebooks", str(dest)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (dest / names[0]).read_text() == "a student's work"
    assert main(["notebooks", str(dest), "--overwrite"]) == 0


def test_reproduce_passes_the_kernel_name(tmp_path, monkeypatch):
    from lora_lab import reproduce as rep

    seen = {}

    def fake_execute(nb, out_path, params, timeout, kernel="python3"):
        seen["kernel"] = kernel
        raise RuntimeError("stop here")

    monkeypatch.setattr(rep, "execute_notebook", fake_execute)
    with pytest.raises(RuntimeError, match="stop here"):
        main(["reproduce", "--quick", "--kernel", "hub-python", "--out", str(tmp_path)])
    assert seen["kernel"] == "hub-python"


def _after_torch(code: str) -> dict[str, float]:
    """Seconds each top-level import of ``code`` took after ``import torch`` (``-X
    importtime``'s cumulative times: CPU work of imports, not wall time)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                         text=True, check=True, env=env).stderr  # fmt: skip
    total: dict[str, float] = {}
    seen_torch = False
    for line in out.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if not m or len(m.group(2)) != 1:
            continue  # only the command's own (top-level) imports
        if seen_torch:
            total[m.group(3)] = total.get(m.group(3), 0) + int(m.group(1)) / 1e6
        seen_torch = seen_torch or m.group(3) == "torch"
    return total


@pytest.mark.slow
def test_help_and_import_stay_light():
    """``lora-lab --help`` imports neither torch nor pandas, and lora_lab's training stack
    costs little beyond torch itself (import times of modules, not wall time, so another
    process on the machine cannot fail this)."""
    out = subprocess.run([sys.executable, "-c", "import sys; from lora_lab.cli import main\n"
                          "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
                          "print(sorted(m for m in ('torch', 'pandas', 'jupyter_server') "
                          "if m in sys.modules))"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.strip().splitlines()[-1] == "[]"
    t = _after_torch("import torch; import lora_lab; from lora_lab import train, LoraConfig")
    assert "lora_lab" in t and 0 < sum(t.values()) < 0.3, t
    # the findings registry (every CLI command, every sweep driver) draws nothing on import:
    # pyplot, seaborn and the scipy.stats seaborn brings load where a plot is drawn
    out = subprocess.run([sys.executable, "-c", "import sys, lora_lab.findings\n"
                          "print(sorted(m for m in ('matplotlib.pyplot', 'seaborn', "
                          "'scipy.stats') if m in sys.modules))"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert out.strip().splitlines()[-1] == "[]"


def test_cli_executor_and_format_lists_match_the_engine():
    from lora_lab import cli
    from lora_lab.own_runs.importers import FORMATS
    from lora_lab.sweeps.executors import EXECUTORS

    assert set(cli.EXECUTORS) == set(EXECUTORS) and cli.ANALYZE_FORMATS == FORMATS
