"""Sweeps the fast way (issue 28): the fused LoRA layer and foreach AdamW change the time a
run takes, not what it measures."""

import json
import math
import statistics

import pytest
import torch

from lora_lab.findings import EXPERIMENTS, get_experiment
from lora_lab.paths import results_root
from lora_lab.sweeps.experiment import Experiment
from lora_lab.sweeps.fast import FAST_LORA_LAYER, fast_spec
from lora_lab.sweeps.verify import verify_record
from lora_lab.training.optim import make_adamw


def _train(foreach: bool, lora: bool) -> torch.Tensor:
    """Five AdamW steps of a small model (FullFT or LoRA with a non-zero B) from seed 0."""
    import torch.nn.functional as F

    from lora_lab.findings.compute import make_variant, random_batch, trainable, width_config
    from lora_lab.model import build_model

    cfg = width_config(32, n_layer=2, seq_len=16)
    torch.manual_seed(0)
    model = make_variant(build_model(cfg), "LoRA (reference)" if lora else "FullFT", 2)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B = 0 at init: give the adapter something to move
            torch.nn.init.normal_(p, std=0.02)
    batch = random_batch(cfg, 4, 16)
    opt = make_adamw(trainable(model), lr=1e-2, foreach=foreach)
    for _ in range(5):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in trainable(model)])


@pytest.mark.parametrize("lora", [False, True], ids=["FullFT", "LoRA"])
def test_foreach_adamw_gives_bit_identical_parameters(lora):
    """Every run (shipped specs included) gets foreach AdamW: allowed only because the
    parameters after several steps are equal to the last bit to torch's per-tensor loop."""
    assert torch.equal(_train(foreach=True, lora=lora), _train(foreach=False, lora=lora))


def test_fast_spec_changes_only_the_layer_of_lora_runs():
    exp = get_experiment("lr_rule")
    lora = next(s for s in exp.specs() if s.is_lora)
    full = next(s for s in exp.specs() if not s.is_lora)
    fast = fast_spec(lora)
    assert fast.lora_layer == FAST_LORA_LAYER and fast.key != lora.key
    assert {k for k, v in fast.to_dict().items() if lora.to_dict()[k] != v} == {"lora_layer"}
    assert fast_spec(full) is full and fast_spec(fast) is fast


def test_an_experiment_lora_layer_reaches_its_lora_specs_only():
    exp = get_experiment("lr_rule")
    grid = [exp.grids["full"][0], next(s for s in exp.grids["full"] if s["method"] == "lora")]
    fast = Experiment(name="fast_copy", description="", base=exp.base, task=exp.task,
                      task_kwargs=exp.task_kwargs, grids={"full": grid},
                      defaults=exp.defaults, lora_layer=FAST_LORA_LAYER)  # fmt: skip
    layers = {s.is_lora: s.lora_layer for s in fast.specs()}
    assert layers == {True: FAST_LORA_LAYER, False: "reference"}


def _shipped_layers(name: str) -> set[str]:
    folder = results_root() / name
    return {json.loads(p.read_text())["spec"].get("lora_layer", "reference")
            for p in folder.glob("*.json")}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_a_new_experiment_runs_lora_the_fast_way(name):
    """The reference layer is kept only where shipped records ran it (their keys stay put);
    a sweep without records yet must declare ``lora_layer=FAST_LORA_LAYER``."""
    reference = {s.key for s in get_experiment(name).specs() if s.is_lora
                 and s.lora_layer == "reference" and s.method.lora_dropout == 0}  # fmt: skip
    if reference:
        assert "reference" in _shipped_layers(name), (
            f"{name}: LoRA specs on the reference layer but no shipped records that ran it; "
            "declare Experiment(..., lora_layer=FAST_LORA_LAYER)"
        )


SAMPLED = ("lr_width", "lr_length", "batch_size", "batch_size_warmup")  # runs of seconds


def _cheapest_record(name: str):
    """The quickest finished, reference-layer LoRA record of a shipped sweep."""
    best = None
    for p in (results_root() / name).glob("*.json"):
        rec = json.loads(p.read_text())
        spec, result = rec["spec"], rec["result"]
        loss = result["final"].get("eval_loss")
        if (spec.get("method") != "lora" or spec.get("lora_layer", "reference") != "reference"
                or result["diverged"] or loss is None or not math.isfinite(loss)):  # fmt: skip
            continue
        wall = rec["provenance"]["wall_time_s"]
        if best is None or wall < best[0]:
            best = (wall, p)
    return best[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", SAMPLED)
def test_a_shipped_run_rerun_the_fast_way_lands_within_its_seed_spread(name):
    """The sample-rerun test: a shipped LoRA run (the quickest of its sweep) rerun through
    the fused layer gives its recorded held-out loss back within the spread between the
    seeds of its condition (``lora-lab verify --fast``)."""
    row = verify_record(_cheapest_record(name), fast=True)
    assert row["way"] == "fast"
    assert math.isfinite(row["seed_spread"]) and row["seed_spread"] > 0
    assert row["outcome"] in ("reproduces", "within the seed spread"), row


def test_readme_sweep_speed_block_is_generated_from_the_record():
    """README's sweep-speed table is ``benchmarks/sweep_speed.py --write README.md`` of the
    shipped record: never typed."""
    from lora_lab.paths import benchmark_record
    from tests.harness import ROOT

    bench = _benchmark("sweep_speed")
    record = json.loads(benchmark_record("sweep_speed").read_text())
    readme = (ROOT / "README.md").read_text()
    block = readme.split(bench.START, 1)[1].split(bench.END, 1)[0]
    assert block.strip() == bench.markdown(record).strip()
    speedups = [r["per_run_shipped"] / r["per_run_fast"] for r in record["rows"]]
    assert record["median_speedup"] == pytest.approx(statistics.median(speedups))


# ----------------------------------------------------------------------------- compiled steps


def test_compiling_is_scoped_and_a_sweep_compiles_only_when_it_pays(tmp_path):
    """Nothing compiles outside a sweep worker's run; ``auto`` compiles only where each worker
    has enough runs ahead to earn the compile back; a bad setting is refused up front."""
    from lora_lab.findings.demo import DEMO
    from lora_lab.model import PRESETS, build_model
    from lora_lab.sweeps.fast import compiles_per_worker, worth_compiling_sweep
    from lora_lab.sweeps.runner import run_sweep
    from lora_lab.training.compiled import (
        MIN_RUNS_PER_COMPILE,
        compiled_steps,
        compiler_missing,
        compiling,
        maybe_compiled,
        ran_compiled,
        worth_compiling,
    )

    assert not compiling()
    with compiled_steps(True) as on:
        assert on == compiling() == (compiler_missing() is None)
        moe = build_model(PRESETS["small-moe"])
        assert maybe_compiled(moe) is moe and not ran_compiled()  # MoE stays eager
        with compiled_steps(False):
            assert not compiling()
        assert compiling() == on
    assert not compiling()
    have = compiler_missing() is None
    assert not worth_compiling(3 * MIN_RUNS_PER_COMPILE - 1, compiles_per_worker=3)
    assert worth_compiling(3 * MIN_RUNS_PER_COMPILE, compiles_per_worker=3) == have
    # a worker compiles once per shape family: FullFT, and each LoRA rank (one batch size)
    capacity = get_experiment("capacity").specs("full")
    ranks = {s.method.r for s in capacity if s.is_lora}
    assert compiles_per_worker(capacity) == {"lora": len(ranks), "full": 1}
    assert worth_compiling_sweep(capacity, jobs=2) == have  # 135 runs, 5 families
    # a second batch size adds a compile (then torch treats the batch as dynamic)
    batch = get_experiment("batch_size").specs("full")
    families = {(s.is_lora, repr(s.method)) for s in batch}
    assert sum(compiles_per_worker(batch).values()) == 2 * len(families)
    assert not worth_compiling_sweep(DEMO.specs("full"), jobs=2)  # 4 runs per worker
    with pytest.raises(ValueError, match="compile must be"):
        run_sweep(DEMO, "ci", root=tmp_path, progress=False, compile="yes")
    summary = run_sweep(DEMO, "ci", root=tmp_path, progress=False)  # 2 runs: not worth it
    assert not summary.compiled and "compiled" not in str(summary)
    records = list(summary.folder.glob("*.json"))
    assert records and all(json.loads(p.read_text())["provenance"]["compiled"] is False
                           for p in records)  # fmt: skip


def test_a_compiled_sweep_starts_its_workers_on_different_shape_families(tmp_path):
    """The first run of every family goes first, then the families one after another: two
    workers compile two families at once instead of the same one twice, and a worker
    meeting a family later loads it from torch's on-disk cache. An eager sweep keeps its
    order."""
    from dataclasses import dataclass

    from lora_lab.sweeps.fast import families_first, shape_family
    from lora_lab.sweeps.runner import run_sweep

    specs = get_experiment("capacity").specs("full")
    ordered = families_first(specs)
    assert sorted(s.key for s in ordered) == sorted(s.key for s in specs)
    families = list(dict.fromkeys(shape_family(s) for s in specs))
    assert len(families) >= 2
    assert [shape_family(s) for s in ordered[: len(families)]] == families
    rest = [shape_family(s) for s in ordered[len(families):]]
    assert rest == sorted(rest, key=families.index)  # family by family, in the same order
    for family in families:  # each family keeps its own order
        assert [s.key for s in ordered if shape_family(s) == family] == [
            s.key for s in specs if shape_family(s) == family]  # fmt: skip

    @dataclass
    class Recording:  # an executor that only notes the order it is handed the runs in
        compile: bool
        name = "recording"

        def map(self, given):
            self.seen = [s.key for s in given]
            return iter([(key, None, "not run") for key in self.seen])

    from lora_lab.findings.demo import DEMO

    expected = [s.key for s in DEMO.specs("full")]
    for compile in (True, False):
        ex = Recording(compile)
        run_sweep(DEMO, "full", root=tmp_path / str(compile), progress=False, executor=ex)
        want = [s.key for s in families_first(DEMO.specs("full"))] if compile else expected
        assert ex.seen == want
    assert [s.key for s in families_first(DEMO.specs("full"))] != expected  # order changed


@pytest.mark.slow
def test_a_compiled_run_matches_eager_and_the_next_run_reuses_its_graphs():
    """The fast way's compile: same losses as eager up to float rounding, recorded as compiled,
    and a second run of the same shapes (a new model, another seed) compiles nothing new."""
    from lora_lab.training.compiled import compiler_missing

    if compiler_missing() is not None:
        pytest.skip(compiler_missing())
    from torch._dynamo.utils import counters

    from lora_lab.findings.demo import DEMO
    from lora_lab.sweeps.spec import RunSpec
    from lora_lab.sweeps.worker import execute

    spec = next(s for s in DEMO.specs("ci") if s.is_lora)
    _, eager, err = execute(spec.to_dict())
    assert not err and eager["provenance"]["compiled"] is False
    _, compiled, err = execute(spec.to_dict(), compile=True)
    assert not err and compiled["provenance"]["compiled"] is True
    a, b = (r["result"]["curves"]["eval_loss"] for r in (eager, compiled))
    assert len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-4) for x, y in zip(a, b))
    graphs = counters["stats"]["unique_graphs"]
    other = RunSpec.from_dict({**spec.to_dict(), "seed": spec.seed + 1, "lr": spec.lr / 2})
    _, again, err = execute(other.to_dict(), compile=True)
    assert not err and again["provenance"]["compiled"] is True
    assert counters["stats"]["unique_graphs"] == graphs, "the second run compiled again"
    rank = RunSpec.from_dict({**spec.to_dict(), "r": 4 * spec.method.r})  # the same family
    _, wider, err = execute(rank.to_dict(), compile=True)
    assert not err and wider["provenance"]["compiled"] is True
    assert counters["stats"]["unique_graphs"] == graphs, "another rank compiled again"


@pytest.mark.parametrize("kind", ["fused", "reference"])
def test_compiled_fused_layers_share_one_graph_across_ranks_but_rank_one(kind):
    """What :func:`shape_family` counts on: with :func:`adapter_ranks`' marks, the fused
    layer's graph (forward and backward) serves ranks 4, 16 and 64 alike and equals eager
    (scale passed as a tensor, not baked in); rank 1 gets its own (torch specialises size 1);
    the reference layer, whose scale is a float constant, compiles per rank."""
    from torch._dynamo.testing import CompileCounter

    from lora_lab.lora.config import LoraConfig
    from lora_lab.lora.dispatch import make_lora_layer
    from lora_lab.sweeps.fast import shape_family
    from lora_lab.sweeps.spec import RunSpec
    from lora_lab.training.compiled import adapter_ranks

    torch._dynamo.reset()
    counter = CompileCounter()
    step = torch.compile(lambda layer, x: layer(x).square().mean(), backend=counter)
    ranks = (4, 16, 64, 1)
    for r in ranks:
        torch.manual_seed(r)
        base = torch.nn.Linear(24, 40)
        layer = make_lora_layer(base, LoraConfig(r=r, lora_alpha=32.0), r, kind)
        torch.nn.init.normal_(layer.lora_B.weight)  # B = 0 would hide a wrong scale
        adapter_ranks(torch.nn.Sequential(layer))
        x = torch.randn(3, 5, 24, requires_grad=True)
        loss = step(layer, x)
        loss.backward()
        grads = [t.grad.clone() for t in (x, layer.lora_A.weight, layer.lora_B.weight)]
        for t in (x, layer.lora_A.weight, layer.lora_B.weight):
            t.grad = None
        layer(x).square().mean().backward()
        assert torch.allclose(loss, layer(x).square().mean(), rtol=1e-5)
        for got, want in zip(grads, (x.grad, layer.lora_A.weight.grad, layer.lora_B.weight.grad)):
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    specs = [RunSpec(base="tiny", task="instruct", lr=1e-3, steps=1, lora_layer=kind,
                     method=LoraConfig(r=r)) for r in ranks]  # fmt: skip
    families = {shape_family(s) for s in specs}
    assert counter.frame_count == len(families) == (2 if kind == "fused" else len(ranks))


def test_packed_compiled_blocks_serve_every_token_count_with_one_graph():
    """Compiled runs pack their tokens (:meth:`CompactLM.packed_logits`): each batch keeps
    another number of tokens, yet the blocks' graphs are built once (token count symbolic) and
    compute what eager does."""
    from torch._dynamo.testing import CompileCounter

    from lora_lab.lora.config import LoraConfig
    from lora_lab.lora.inject import inject_lora
    from lora_lab.model import build_model
    from lora_lab.training.compiled import adapter_ranks

    torch._dynamo.reset()
    counter = CompileCounter()
    model = build_model("tiny", seed=2)
    inject_lora(model, LoraConfig(r=4, target_modules="all"), layer_kind="fused")
    adapter_ranks(model)
    model.pack_tokens = True
    for block in model.layers:
        block.compile(backend=counter)
    kept = set()
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(1, 99, (4, 16), generator=g)
        lengths = torch.randint(2, 17, (4,), generator=g)
        lengths[0] = 16
        keep = torch.arange(16) < lengths[:, None]
        kept.add(int(keep.sum()))
        model.packed_logits(idx, keep).square().mean().backward()
    # two graphs: the first block's input needs no grad (frozen embedding), the others' do
    assert len(kept) == 3 and counter.frame_count == 2
    compiled = model.packed_logits(idx, keep)
    for block in model.layers:
        block._compiled_call_impl = None  # back to the eager forward
    torch.testing.assert_close(compiled, model.packed_logits(idx, keep), rtol=1e-5, atol=1e-6)


def _benchmark(name: str):
    import importlib.util

    from tests.harness import ROOT

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_time_reads_papermill_cell_times_and_the_browser_phases(tmp_path):
    """benchmarks/notebook_time.py: cells slowest first from papermill's metadata, and the
    browser test's timings files summed per phase (a folder without them is an error)."""
    bench = _benchmark("notebook_time")
    cells = [
        {"cell_type": "markdown", "source": ["# title"]},
        {"cell_type": "code", "source": ["import torch\n", "x = 1"],
         "metadata": {"papermill": {"duration": 0.5}}},
        {"cell_type": "code", "source": ["\n", "run_sweep(exp, 'ci')"],
         "metadata": {"papermill": {"duration": 7.25}}},
        {"cell_type": "code", "source": ["pass"], "metadata": {}},
    ]  # fmt: skip
    nb = tmp_path / "nb.ipynb"
    nb.write_text(json.dumps({"cells": cells}))
    assert bench.cell_times(nb) == [(7.25, "run_sweep(exp, 'ci')"), (0.5, "import torch"),
                                    (0.0, "pass")]  # fmt: skip
    with pytest.raises(SystemExit, match="no timings"):
        bench.browser_table(tmp_path)
    for stem, panels in (("00_a", []), ("01_b", [2.0, 3.0])):
        (tmp_path / f"{stem}.timings.json").write_text(
            json.dumps({"open_s": 1.0, "run_all_s": 10.0, "panels_s": panels})
        )
    table = bench.browser_table(tmp_path)
    assert "| 01_b | 1.0 | 10.0 | 2.0, 3.0 |" in table and "| 00_a | 1.0 | 10.0 | - |" in table
    assert table.splitlines()[-1] == "| all 2 | 2 | 20 | 5 |"
