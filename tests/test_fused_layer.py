"""The fused LoRA layer against the reference layer it replaces: the same function, the same
gradients (for x, A and B), the same merge/unmerge, and the fallbacks it promises."""

import copy

import pytest
import torch

from lora_lab import LoraConfig, build_model, inject_lora
from lora_lab.lora import (
    FusedLoRALinear,
    LoRALinear,
    default_layer_kind,
    lora_layers,
    merge,
    unmerge,
)
from lora_lab.lora.fused import _FusedLoRA


def _pair(r=3, bias=True, rslora=False, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(12, 7, bias=bias)
    ref = LoRALinear(copy.deepcopy(lin), r=r, use_rslora=rslora)
    fused = FusedLoRALinear(copy.deepcopy(lin), r=r, use_rslora=rslora)
    with torch.no_grad():
        torch.nn.init.normal_(ref.lora_B.weight, std=0.1)
        fused.load_state_dict(ref.state_dict())
    return ref, fused


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("shape", [(5, 12), (2, 4, 12)])
def test_fused_equals_reference_outputs_and_gradients(bias, rslora, shape):
    ref, fused = _pair(bias=bias, rslora=rslora)
    x = torch.randn(shape)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [layer(xi) for layer, xi in zip((ref, fused), xs, strict=True)]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=0)
    g = torch.randn_like(outs[0])
    for out in outs:
        out.backward(g)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, atol=1e-5, rtol=0)
    for ab in ("lora_A", "lora_B"):
        g_ref, g_fused = getattr(ref, ab).weight.grad, getattr(fused, ab).weight.grad
        torch.testing.assert_close(g_fused, g_ref, atol=1e-5, rtol=0)
    assert fused.base_layer.weight.grad is None  # the frozen weight gets no gradient


def test_fused_backward_passes_gradcheck_in_double():
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.double, requires_grad=True)
    w, b = torch.randn(4, 5, dtype=torch.double), torch.randn(4, dtype=torch.double)
    a = torch.randn(2, 5, dtype=torch.double, requires_grad=True)
    bb = torch.randn(4, 2, dtype=torch.double, requires_grad=True)
    fn = lambda x, a, bb: _FusedLoRA.apply(x, w, b, a, bb, 1.7)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, a, bb))


def test_fused_merge_unmerge_and_fallbacks():
    ref, fused = _pair()
    x = torch.randn(3, 12)
    before = fused(x)
    fused.merge()
    torch.testing.assert_close(fused(x), before, atol=1e-5, rtol=0)
    fused.unmerge()
    torch.testing.assert_close(fused(x), before, atol=1e-5, rtol=0)
    fused.base_layer.weight.requires_grad_(True)  # a trainable base: the reference path
    assert not fused._fusable()
    torch.testing.assert_close(fused(x), ref(x), atol=1e-5, rtol=0)


def test_layer_kind_selection_and_dropout_fallback(monkeypatch):
    base = build_model("nano", seed=0)
    assert default_layer_kind() == "reference"
    fused = inject_lora(copy.deepcopy(base), LoraConfig(r=2), layer_kind="fused")
    assert {type(m) for m in lora_layers(fused).values()} == {FusedLoRALinear}
    assert fused.lora_layer_kind == "fused"
    dropped = inject_lora(copy.deepcopy(base), LoraConfig(r=2, lora_dropout=0.1), "fused")
    assert {type(m) for m in lora_layers(dropped).values()} == {LoRALinear}
    plain = inject_lora(copy.deepcopy(base), LoraConfig(r=2))  # nothing global changed
    assert {type(m) for m in lora_layers(plain).values()} == {LoRALinear}
    monkeypatch.setenv("LORA_LAB_LORA_LAYER", "fused")  # the default, read when injecting
    env = inject_lora(copy.deepcopy(base), LoraConfig(r=2))
    assert {type(m) for m in lora_layers(env).values()} == {FusedLoRALinear}
    with pytest.raises(ValueError, match="unknown LoRA layer kind"):
        inject_lora(copy.deepcopy(base), LoraConfig(r=2), layer_kind="turbo")


def test_fused_model_trains_like_the_reference():
    from lora_lab.tasks import make_facts
    from lora_lab.training import train

    data = make_facts(n_entities=32, seed=0)
    base = build_model("nano", seed=0)
    losses = {}
    for kind in ("reference", "fused"):
        r = train(base, data.train, LoraConfig(r=4), lr=2e-3, steps=15, batch_size=8,
                  eval_data=data.test, eval_limit=16, seed=0, lora_layer=kind)  # fmt: skip
        losses[kind] = r.final["eval_loss"]
        expected = {"reference": "LoRALinear", "fused": "FusedLoRALinear"}[kind]
        assert r.config["lora_layer_class"] == expected
    assert losses["fused"] == pytest.approx(losses["reference"], abs=1e-4)
    m = inject_lora(copy.deepcopy(base), LoraConfig(r=2))
    merge(m)
    unmerge(m)


def test_fused_evaluation_path_gives_the_training_path_output_exactly():
    """Under ``no_grad`` the fused layer skips the adapter's saved tensors; its output must
    be the grad path's to the last bit (evaluations of the fast way stay comparable)."""
    from lora_lab.lora.fused import FusedLoRALinear

    torch.manual_seed(0)
    layer = FusedLoRALinear(torch.nn.Linear(24, 40), r=4, lora_alpha=32)
    layer.base_layer.weight.requires_grad_(False)
    layer.base_layer.bias.requires_grad_(False)
    torch.nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(3, 7, 24)
    with torch.no_grad():
        evaluated = layer(x)
    assert torch.equal(evaluated, layer(x).detach())
