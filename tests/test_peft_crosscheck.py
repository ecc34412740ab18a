"""Our LoRA against HF PEFT itself: same forward, same gradients, interchangeable adapters.

These run (never skip) in CI: peft is part of the dev extra. peft is imported by the tests,
not at collection (~3-6 s that every test worker would pay), and the module runs on one
worker (``tests/conftest.py``).
"""

import copy

import pytest
import torch

from lora_lab import LoraConfig, build_model, inject_lora, load_adapter, save_adapter
from lora_lab.lora import TARGET_PRESETS, FusedLoRALinear, LoRALinear, lora_layers
from lora_lab.lora.peft_io import _EXPERT_PATTERN

CASES = [
    ("nano", "all", False),
    ("tiny", "attn", False),
    ("nano", "mlp", True),  # rsLoRA
    ("small-moe", "all", False),
    ("small-moe", "all", True),
]


def _peft_twin(base, cfg: LoraConfig):
    """PEFT model on a copy of ``base`` with the same config (expert rank via rank_pattern)."""
    import peft

    expert_ranks = {
        m.r
        for n, m in lora_layers(inject_lora(copy.deepcopy(base), cfg)).items()
        if ".experts." in n
    }
    pcfg = peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.lora_alpha,
        target_modules=list(TARGET_PRESETS[cfg.target_modules]),
        use_rslora=cfg.use_rslora,
        rank_pattern={_EXPERT_PATTERN: expert_ranks.pop()} if expert_ranks else {},
    )
    return peft.get_peft_model(copy.deepcopy(base), pcfg)


def _randomise_and_copy(ours, theirs):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=gen) * 0.05)
            twin = theirs.base_model.model.get_submodule(name)
            assert twin.lora_A["default"].weight.shape == layer.lora_A.weight.shape
            twin.lora_A["default"].weight.copy_(layer.lora_A.weight)
            twin.lora_B["default"].weight.copy_(layer.lora_B.weight)
            assert twin.scaling["default"] == pytest.approx(layer.scaling)


# Every LoRA layer kind must be PEFT's LoRA: the readable reference layer to 1e-6, the fused
# one (one autograd node, another order of float operations) to 1e-5.
KINDS = {"reference": (LoRALinear, 1e-6), "fused": (FusedLoRALinear, 1e-5)}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("preset, targets, rslora", CASES)
def test_forward_and_gradients_match_peft(preset, targets, rslora, kind):
    layer_type, tol = KINDS[kind]
    base = build_model(preset, seed=1)
    cfg = LoraConfig(r=4, target_modules=targets, use_rslora=rslora)
    ours = inject_lora(copy.deepcopy(base), cfg, layer_kind=kind)
    assert {type(m) for m in lora_layers(ours).values()} == {layer_type}
    theirs = _peft_twin(base, cfg)
    _randomise_and_copy(ours, theirs)
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == sum(
        p.numel() for p in theirs.parameters() if p.requires_grad
    )
    x = torch.randint(0, 99, (4, 64))
    out_ours, out_theirs = ours(x), theirs(x)
    assert torch.allclose(out_ours, out_theirs, atol=tol)
    (out_ours.float() ** 2).mean().backward()
    (out_theirs.float() ** 2).mean().backward()
    for name, layer in lora_layers(ours).items():
        twin = theirs.base_model.model.get_submodule(name)
        for ab in ("lora_A", "lora_B"):
            g1 = getattr(layer, ab).weight.grad
            g2 = getattr(twin, ab)["default"].weight.grad
            if g1 is None or g2 is None:  # an expert no token was routed to
                assert g1 is None and g2 is None, (name, ab)
                continue
            assert torch.allclose(g1, g2, atol=tol), (name, ab)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("preset", ["nano", "small-moe"])
def test_adapter_files_interchange_with_peft(preset, kind, tmp_path):
    base = build_model(preset, seed=2)
    cfg = LoraConfig(r=4, target_modules="all")
    tol = KINDS[kind][1]
    ours = inject_lora(copy.deepcopy(base), cfg, layer_kind=kind)
    theirs = _peft_twin(base, cfg)
    _randomise_and_copy(ours, theirs)
    x = torch.randint(0, 99, (2, 16))
    expected = ours(x)

    save_adapter(ours, tmp_path / "ours")
    from peft import PeftModel

    from_ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
    assert torch.allclose(from_ours(x), expected, atol=tol)

    theirs.save_pretrained(tmp_path / "theirs")
    from_theirs = load_adapter(copy.deepcopy(base), tmp_path / "theirs")
    assert torch.allclose(from_theirs(x), theirs(x), atol=1e-6)
