import copy
import math

import pytest
import torch

from lora_lab import (
    LoraConfig,
    LoRALinear,
    build_model,
    count_lora_params,
    inject_lora,
    load_adapter,
    merge,
    parameter_report,
    save_adapter,
    unload,
    unmerge,
)
from lora_lab.lora import lora_layers


def _perturb_b(model, std=0.05):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=gen) * std)


@pytest.mark.parametrize("preset", ["nano", "small-moe"])
@pytest.mark.parametrize("targets", ["all", "attn", "mlp"])
def test_init_is_bit_identical_to_base(preset, targets):
    base = build_model(preset)
    x = torch.randint(0, 99, (2, 16))
    expected = base(x)
    adapted = inject_lora(copy.deepcopy(base), LoraConfig(r=4, target_modules=targets))
    assert torch.equal(adapted(x), expected)


def test_init_distribution_is_peft_default():
    layer = LoRALinear(torch.nn.Linear(256, 64, bias=False), r=16)
    bound = 1 / math.sqrt(256)
    A = layer.lora_A.weight
    assert A.shape == (16, 256) and layer.lora_B.weight.shape == (64, 16)
    assert A.abs().max() <= bound and A.abs().max() > 0.95 * bound  # uniform, fills its range
    assert abs(A.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    assert layer.scaling == 32 / 16
    assert LoRALinear(torch.nn.Linear(8, 8), r=4, use_rslora=True).scaling == 32 / 2


@pytest.mark.parametrize("preset", ["nano", "small-moe"])
def test_merge_unmerge_unload_agree(preset):
    model = inject_lora(build_model(preset), LoraConfig(r=4))
    _perturb_b(model)
    x = torch.randint(0, 99, (2, 16))
    unmerged = model(x)
    merge(model)
    assert torch.allclose(model(x), unmerged, atol=1e-5)
    unmerge(model)
    assert torch.allclose(model(x), unmerged, atol=1e-5)
    plain = unload(model)
    assert not lora_layers(plain)
    assert torch.allclose(plain(x), unmerged, atol=1e-5)


def test_only_lora_parameters_get_gradients():
    model = inject_lora(build_model("nano"), LoraConfig(r=2, target_modules="all"))
    _perturb_b(model)
    model(torch.randint(0, 99, (2, 8))).sum().backward()
    for name, p in model.named_parameters():
        is_lora = ".lora_A." in name or ".lora_B." in name
        assert p.requires_grad == is_lora, name
        assert (p.grad is not None) == is_lora, name


@pytest.mark.parametrize("preset", ["nano", "tiny", "small-moe"])
@pytest.mark.parametrize("targets", ["all", "attn", "mlp", ["q_proj", "down_proj"]])
@pytest.mark.parametrize("r", [1, 4, 16])
def test_counted_params_equal_built_params(preset, targets, r):
    cfg = LoraConfig(r=r, target_modules=targets)
    model = inject_lora(build_model(preset), cfg)
    built = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert built == count_lora_params(model.config, cfg)
    per_matrix = sum(
        layer.r * (layer.in_features + layer.out_features) for layer in lora_layers(model).values()
    )
    assert built == per_matrix


def test_moe_expert_rank_rule():
    model = inject_lora(build_model("small-moe"), LoraConfig(r=8))
    layers = lora_layers(model)
    assert layers["layers.0.mlp.experts.3.up_proj"].r == 4  # r // top_k
    assert layers["layers.0.self_attn.q_proj"].r == 8
    assert "layers.0.mlp.router" not in layers
    one = inject_lora(build_model("small-moe"), LoraConfig(r=1))
    assert lora_layers(one)["layers.0.mlp.experts.0.up_proj"].r == 1  # never below 1
    custom = inject_lora(build_model("small-moe"), LoraConfig(r=8, expert_r=3))
    assert lora_layers(custom)["layers.1.mlp.experts.0.down_proj"].r == 3


def test_target_forms():
    names = set(lora_layers(inject_lora(build_model("nano"), LoraConfig(target_modules="attn"))))
    assert names == {f"layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkvo"}
    regex = inject_lora(build_model("nano"), LoraConfig(target_modules=r"layers\.0\..*_proj"))
    assert len(lora_layers(regex)) == 7
    head = inject_lora(build_model("nano"), LoraConfig(target_modules=["lm_head"]))
    assert list(lora_layers(head)) == ["lm_head"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"r": 0}, "r must be"),
        ({"r": -2}, "r must be"),
        ({"lora_alpha": 0}, "lora_alpha"),
        ({"target_modules": []}, "empty"),
        ({"target_modules": ""}, "empty"),
        ({"lora_dropout": 1.5}, "dropout"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoraConfig(**kwargs)


def test_unknown_target_lists_what_exists():
    with pytest.raises(ValueError, match="q_porj.*module names that exist.*q_proj"):
        inject_lora(build_model("nano"), LoraConfig(target_modules=["q_proj", "q_porj"]))
    with pytest.raises(ValueError, match="matches no module"):
        inject_lora(build_model("nano"), LoraConfig(target_modules=r"nothing\..*"))


def test_non_linear_target_rejected():
    with pytest.raises(ValueError, match="embed_tokens.*Embedding"):
        inject_lora(build_model("nano"), LoraConfig(target_modules=["embed_tokens"]))
    with pytest.raises(ValueError, match="not"):
        inject_lora(build_model("nano"), LoraConfig(target_modules=["self_attn"]))


def test_double_injection_rejected():
    model = inject_lora(build_model("nano"), LoraConfig())
    with pytest.raises(ValueError, match="already"):
        inject_lora(model, LoraConfig())


def test_parameter_report():
    model = inject_lora(build_model("tiny"), LoraConfig(r=4, target_modules="mlp"))
    report = parameter_report(model)
    assert report.loc["total", "base_params"] == 213_952
    assert report.loc["attention", "trainable"] == 0
    assert report.loc["mlp", "trainable"] == count_lora_params(model.config, model.lora_config)
    assert 0.6 < report.loc["mlp", "share_of_base"] < 0.7  # SwiGLU MLP ~ 2/3 of block weights


def test_adapter_round_trip(tmp_path):
    base = build_model("small-moe")
    model = inject_lora(copy.deepcopy(base), LoraConfig(r=4, use_rslora=True))
    _perturb_b(model)
    save_adapter(model, tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists()
    loaded = load_adapter(copy.deepcopy(base), tmp_path)
    x = torch.randint(0, 99, (2, 10))
    assert torch.equal(loaded(x), model(x))


def test_adapter_errors(tmp_path):
    base = build_model("nano")
    model = inject_lora(copy.deepcopy(base), LoraConfig(r=4))
    save_adapter(model, tmp_path / "ok")
    # a different base (same shapes, other weights)
    with pytest.raises(ValueError, match="different base"):
        load_adapter(build_model("nano", seed=9), tmp_path / "ok")
    # mismatched shapes: an adapter for another preset
    other = inject_lora(build_model("tiny"), LoraConfig(r=4, target_modules=["q_proj"]))
    save_adapter(other, tmp_path / "tiny")
    with pytest.raises(ValueError, match="shape|keys"):
        load_adapter(copy.deepcopy(base), tmp_path / "tiny", check_base=False)
    # a corrupted weights file
    bad = tmp_path / "bad"
    save_adapter(model, bad)
    data = (bad / "adapter_model.safetensors").read_bytes()
    (bad / "adapter_model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="safetensors"):
        load_adapter(copy.deepcopy(base), bad)
    # no adapters to save
    with pytest.raises(ValueError, match="no LoRA"):
        save_adapter(copy.deepcopy(base), tmp_path / "none")
