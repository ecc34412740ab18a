"""Engine hardening (issue 26): workers die with their driver, drivers share a store, a
worker running other code refuses, failures keep their traceback, and records name the
code that ran."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from lora_lab.findings.demo import DEMO
from lora_lab.sweeps import executors
from lora_lab.sweeps.claims import Claims, pid_alive
from lora_lab.sweeps.experiment import grid
from lora_lab.sweeps.identity import CODE, source_hash
from lora_lab.sweeps.runner import CodeSkewError, run_sweep
from lora_lab.sweeps.store import ResultStore
from lora_lab.sweeps.worker import SKEW, execute

CLI = [sys.executable, "-c", "import sys; from lora_lab.cli import main; sys.exit(main())"]


def _children(pid: int) -> set[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_no_process_of_a_sweep_survives_its_killed_driver(tmp_path):
    driver = subprocess.Popen([*CLI, "sweep", "demo", "--jobs", "2", "--out", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 60
    kids: set[int] = set()
    while time.time() < deadline and len(kids) < 3:  # two workers and the resource tracker
        kids |= _children(driver.pid)
        time.sleep(0.2)
    assert len(kids) >= 2, f"the driver never started its workers ({kids})"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 10  # workers check on their parent every second
    while (alive := [pid for pid in kids if pid_alive(pid)]) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive, f"processes of the sweep still alive 10 s after SIGKILL: {alive}"


def test_a_worker_exits_on_sigterm(tmp_path):
    code = ("import os, signal, time; from lora_lab.sweeps.executors import _init_worker; "
            "_init_worker(1, os.getppid()); print('ready', flush=True); time.sleep(60)")
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "ready"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=5) == 128 + signal.SIGTERM


@pytest.mark.slow
def test_two_drivers_on_one_store_run_each_run_once(tmp_path):
    """Started together on one folder, two drivers split the runs between them."""
    script = ("import sys; from lora_lab.findings.demo import DEMO; "
              "from lora_lab.sweeps.runner import run_sweep; "
              "s = run_sweep(DEMO, 'full', jobs=1, root=sys.argv[1], progress=False, "
              "executor='serial', poll_s=0.2); print(s.ran, s.total)")  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    ran = [int(o[0]) for o in outs]
    total = int(outs[0][1])
    assert sum(ran) == total == len(DEMO.specs("full")), outs
    assert len(ResultStore(tmp_path / "demo").scan()[0]) == total
    assert not list((tmp_path / "demo" / ".claims").glob("*.json"))  # every claim released


def test_a_dead_drivers_claims_are_taken_over(tmp_path):
    folder = tmp_path / "demo-ci"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    first = DEMO.specs("ci")[0].key
    other = Claims(folder)
    other.me["pid"] = dead.pid  # a driver on this host that is gone
    assert other.claim(first)
    other._stop.set()  # its heartbeat stops with it; the claim file stays behind
    summary = run_sweep(DEMO, "ci", jobs=1, root=tmp_path, progress=False, poll_s=0.1)
    assert summary.ran == 2 and not summary.failed


def test_a_live_drivers_claim_is_left_alone_until_its_record_lands(tmp_path):
    folder = tmp_path / "demo-ci"
    spec = DEMO.specs("ci")[0]
    holder = Claims(folder)
    assert holder.claim(spec.key)
    assert not Claims(folder).claim(spec.key)  # alive, fresh heartbeat: skipped

    def land(key: str) -> None:  # the holder finishes its run while we wait
        _, record, _ = execute(spec.to_dict())
        ResultStore(folder).write(spec.key, record)
        holder.release(spec.key)

    import threading

    threading.Timer(0.5, land, args=(spec.key,)).start()
    summary = run_sweep(DEMO, "ci", jobs=1, root=tmp_path, progress=False, poll_s=0.1)
    assert summary.ran == 1 and not summary.failed  # the other run only
    assert len(ResultStore(folder).scan()[0]) == 2
    holder.close()


def test_a_worker_with_other_code_refuses_before_running(tmp_path):
    spec = DEMO.specs("ci")[0]
    theirs = {**CODE.as_dict(), "source_hash": "0" * 16}
    key, record, err = execute(spec.to_dict(), expect=theirs)
    assert record is None and err.startswith(SKEW) and "source_hash" in err
    key, record, err = execute(spec.to_dict(), expect={**CODE.as_dict(), "git_commit": "x"})
    assert record is not None and not err  # a moved commit alone is no skew


def test_the_driver_stops_at_the_first_skewed_worker(tmp_path, monkeypatch):
    calls = []

    def skewed(spec, threads=None, expect=None, compile=False):
        calls.append(spec)
        return "k", None, f"{SKEW}: spec_format differs"

    monkeypatch.setattr(executors, "execute", skewed)
    with pytest.raises(CodeSkewError, match="spec_format"):
        run_sweep(DEMO, "full", jobs=1, root=tmp_path, progress=False, executor="serial")
    assert len(calls) == 1  # nothing queued behind the refusal


def test_a_failed_run_keeps_its_traceback():
    spec = DEMO.specs("ci")[0].to_dict()
    spec["task_kwargs"] = {"n_entities": -1}
    _, record, err = execute(spec)
    assert record is None and err.startswith("ValueError") and "Traceback" in err
    assert "make_facts" in err  # where it happened, not only what


def test_records_name_the_code_that_ran(tmp_path):
    summary = run_sweep(DEMO, "ci", jobs=1, root=tmp_path, progress=False)
    for rec in ResultStore(summary.folder).scan()[0].values():
        prov = rec["provenance"]
        assert prov["source_hash"] == CODE.source_hash == source_hash()
        assert prov["spec_format"] == CODE.spec_format
        assert prov["git_commit"] == CODE.git_commit


# ----------------------------------------------------------------------------- declaration
@pytest.mark.parametrize(
    "change, match",
    [
        ({"task_kwargs": {"n_entitys": 64}}, "unexpected keyword argument 'n_entitys'"),
        ({"eval_split": "validation"}, "has splits .*'recall'.* not 'validation'"),
        ({"warmup_steps": 50, "steps": 5}, "warmup_steps \\(50\\) is longer than the run"),
        ({"task": "arith_prefs", "task_kwargs": {"digitz": (1, 2)}}, "digitz"),
    ],
)
def test_specs_are_refused_at_declaration(change, match):
    from lora_lab.sweeps.spec import RunSpec

    base = {"base": "nano", "task": "facts", "lr": 1e-3, "steps": 10, "eval_split": "recall"}
    with pytest.raises(ValueError, match=match):
        RunSpec.from_dict({**base, **change})


def test_every_task_declares_the_splits_it_builds():
    from lora_lab.tasks import SPLITS, TASKS, make_task

    small = {
        "facts": {"n_entities": 8}, "instruct": {"n_train": 8, "n_test": 4},
        "arith": {"n_train": 8, "n_test": 4}, "two_hop": {"n_people": 12, "n_companies": 4},
        "facts_prefs": {"n_entities": 8}, "arith_prefs": {"n_train": 8, "n_test": 4},
    }  # fmt: skip
    assert set(small) == set(TASKS)
    for name, kw in small.items():
        task = make_task(name, **kw)
        assert set(SPLITS[name]) == {"train", "test", *task.extra}, name


def test_a_rank_beyond_the_layer_is_warned_about_before_anything_is_built():
    from lora_lab import LoraConfig
    from lora_lab.sweeps.spec import RunSpec
    from lora_lab.training.methods import apply_method
    from lora_lab.training.pretrain import load_base

    with pytest.warns(UserWarning, match="exceeds the smallest dimension.*parameters"):
        RunSpec(base="nano", task="facts", lr=1e-3, steps=5, method=LoraConfig(r=64))
    with pytest.warns(UserWarning, match="can express nothing a rank of 48 cannot"):
        apply_method(load_base("nano"), LoraConfig(r=64))


def test_spec_checks_read_once_per_process_still_judge_every_spec():
    """Target matching and task signatures are cached per process (a grid declares thousands
    of specs): a bad spec is refused every time, and each rank is judged on its own."""
    from lora_lab import LoraConfig
    from lora_lab.sweeps.spec import RunSpec

    for _ in range(2):
        with pytest.raises(ValueError, match="match no module"):
            RunSpec(base="nano", task="facts", lr=1e-3, steps=5, method=LoraConfig(r=2,
                    target_modules=["q_proj", "nope"]))  # fmt: skip
        with pytest.raises(ValueError, match="n_entites"):
            RunSpec(base="nano", task="facts", lr=1e-3, steps=5, task_kwargs={"n_entites": 5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a rank that fits is not warned about...
        fits = RunSpec(base="nano", task="facts", lr=1e-3, steps=5, method=LoraConfig(r=2))
    with pytest.warns(UserWarning, match="exceeds the smallest dimension"):  # ...this one is
        RunSpec(base="nano", task="facts", lr=1e-3, steps=5, method=LoraConfig(r=64))
    assert fits.key == RunSpec.from_dict(fits.to_dict()).key  # the key, kept, is the same


def test_rl_settings_share_one_check():
    from lora_lab.sweeps.spec import RunSpec
    from lora_lab.tasks import make_task
    from lora_lab.training.rl import train_rl

    with pytest.raises(ValueError, match="temperature must be a positive"):
        RunSpec(base="nano", task="arith", lr=1e-3, steps=2, objective="rl", temperature=0.0)
    arith = make_task("arith", n_train=8, n_test=4, digits=(1, 2))
    with pytest.raises(ValueError, match="temperature must be a positive"):
        train_rl("nano", arith.train, lr=1e-3, steps=1, temperature=0, progress=False)


def test_a_bogus_layer_kind_in_the_environment_is_an_error_where_read(monkeypatch):
    from lora_lab import LoraConfig
    from lora_lab.training.methods import apply_method
    from lora_lab.training.pretrain import load_base

    monkeypatch.setenv("LORA_LAB_LORA_LAYER", "bogus")
    with pytest.raises(ValueError, match="LORA_LAB_LORA_LAYER='bogus' names no LoRA layer kind"):
        apply_method(load_base("nano"), LoraConfig(r=2))


# ----------------------------------------------------------------------------- errors
def test_an_unreachable_ray_address_is_one_line(tmp_path, capsys, monkeypatch):
    import types

    def refuse(*args, **kwargs):  # what ray.init raises when no cluster answers
        raise ConnectionError("could not connect to 10.255.255.1:6379")

    fake = types.SimpleNamespace(init=refuse, is_initialized=lambda: False)
    monkeypatch.setitem(sys.modules, "ray", fake)  # Ray itself is an optional extra
    from lora_lab.cli import main

    code = main(["sweep", "demo", "--grid", "ci", "--executor", "ray", "--address",
                 "10.255.255.1:6379", "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("lora-lab: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert "10.255.255.1:6379" in errors[0] and "ray start --head" in errors[0]


def test_the_cli_tells_user_errors_from_bugs(monkeypatch, capsys):
    from lora_lab import cli

    assert cli.main(["verify", "no/such/record.json"]) == 2
    assert "no record at" in capsys.readouterr().err

    def bug(args):
        raise TypeError("a bug in lora_lab")

    monkeypatch.setattr(cli, "cmd_list", bug)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["experiments"].set_defaults(func=bug)
    with pytest.raises(TypeError, match="a bug in lora_lab"):
        cli.main(["experiments"])


@pytest.mark.slow
def test_verify_reruns_records_and_compares_with_the_seed_spread(tmp_path):
    from lora_lab.sweeps.verify import verify_records

    # one condition on two seeds (its seed spread), 10 steps: what verifying needs, no more
    pair = grid(method="full", lr=1e-3, seed=[0, 1], steps=10)
    two_seeds = dataclasses.replace(DEMO, grids={"two": pair})
    folder = run_sweep(two_seeds, "two", root=tmp_path, progress=False, executor="serial").folder
    files = sorted(folder.glob("*.json"))
    table = verify_records([files[0]])
    assert table.outcome.tolist() == ["reproduces"] and table.code.tolist() == ["same"]
    assert abs(table.difference.iloc[0]) < 1e-9 and table.seed_spread.iloc[0] > 0
    rec = json.loads(files[1].read_text())
    rec["result"]["final"]["eval_loss"] += 10.0  # a record whose number cannot come back
    files[1].write_text(json.dumps(rec))
    assert verify_records([files[1]]).outcome.tolist() == ["differs"]
