import pytest
import torch

from lora_lab.model import (
    PRESETS,
    ModelConfig,
    build_model,
    count_parameters,
    get_preset,
    linear_shapes,
    load_model,
    save_model,
)

# Documented parameter counts (README "Presets"); a change to the architecture must update both.
EXPECTED_PARAMS = {"nano": 65_040, "tiny": 213_952, "small": 1_212_800, "wide": 1_633_024,
                   "small-moe": 1_865_600}  # fmt: skip


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts(name):
    assert count_parameters(build_model(name)) == EXPECTED_PARAMS[name]


def test_size_classes():
    assert EXPECTED_PARAMS["nano"] < 100_000
    assert 1_000_000 <= EXPECTED_PARAMS["small"] <= 3_000_000


def test_llama_module_names():
    names = dict(build_model("nano").named_modules())
    for n in [
        "embed_tokens",
        "layers.0.self_attn.q_proj",
        "layers.1.self_attn.o_proj",
        "layers.0.mlp.gate_proj",
        "layers.0.mlp.up_proj",
        "layers.0.mlp.down_proj",
        "lm_head",
    ]:
        assert n in names
    moe = dict(build_model("small-moe").named_modules())
    assert "layers.0.mlp.router" in moe and "layers.0.mlp.experts.7.down_proj" in moe


@pytest.mark.parametrize("name", list(PRESETS))
def test_linear_shapes_match_model(name):
    model = build_model(name)
    real = {
        n: (m.in_features, m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
    }
    assert real == linear_shapes(model.config)


def test_save_load_round_trip_bit_exact(tmp_path):
    model = build_model("small-moe", seed=3)
    save_model(model, tmp_path / "m", metadata={"note": "x"})
    again = load_model(tmp_path / "m")
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randint(0, 99, (2, 12))
    assert torch.equal(model(x), again(x))


def test_load_rejects_mismatched_weights(tmp_path):
    save_model(build_model("nano"), tmp_path / "m")
    import json

    meta = json.loads((tmp_path / "m.json").read_text())
    meta["config"]["d_model"] = 64
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises((ValueError, RuntimeError)):
        load_model(tmp_path / "m")


def test_build_is_seeded():
    a, b = build_model("nano", seed=1), build_model("nano", seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_kv_cache_matches_full_forward():
    model = build_model("tiny").eval()
    x = torch.randint(0, 99, (3, 20))
    full = model(x)
    out, cache = model(x[:, :7], return_cache=True)
    pieces = [out]
    for t in range(7, 20, 4):  # mixes multi-token prefill and single steps
        out, cache = model(x[:, t : t + 4], past=cache, return_cache=True)
        pieces.append(out)
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)


def test_greedy_generate_equals_uncached_argmax():
    model = build_model("small-moe").eval()
    idx = torch.randint(0, 99, (2, 5))
    fast = model.generate(idx, 15, temperature=0)
    slow = idx
    for _ in range(15):
        slow = torch.cat([slow, model(slow)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(fast, slow)


def test_generate_sampling_is_seeded_and_stops_at_eos():
    model = build_model("nano").eval()
    idx = torch.randint(0, 99, (4, 3))
    g1 = model.generate(
        idx, 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(0)
    )
    g2 = model.generate(
        idx, 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(g1, g2)
    # With every token allowed as EOS-candidate the batch ends once all rows emitted it.
    eos = int(g1[0, 3])
    g3 = model.generate(
        idx, 10, temperature=1.0, top_k=5, eos_id=eos, generator=torch.Generator().manual_seed(0)
    )
    row0 = g3[0, 3:]
    assert (row0 == eos).all()


def test_bad_configs_raise():
    with pytest.raises(ValueError):
        ModelConfig(d_model=30, n_head=4)
    with pytest.raises(ValueError):
        ModelConfig(n_experts=4, top_k=5)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="max_seq_len"):
        build_model("nano")(torch.zeros(1, 500, dtype=torch.long))


def test_moe_routes_to_several_experts():
    model = build_model("small-moe")
    model(torch.randint(0, 99, (4, 32)))
    aux = model.aux_loss()
    # Balanced routing gives aux == n_layer; a collapsed router gives up to n_layer * E / k.
    assert 0.5 * model.config.n_layer < float(aux.detach()) < 2 * model.config.n_layer


def _prefix_batch(rows: int = 5, width: int = 18, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Token ids and a keep mask covering a prefix of random length in every row."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(1, 99, (rows, width), generator=g)
    lengths = torch.randint(1, width + 1, (rows,), generator=g)
    lengths[0] = width  # one full row, so no column is dropped as a whole
    return idx, torch.arange(width) < lengths[:, None]


@pytest.mark.parametrize("variant", ["full", "reference", "fused"])
def test_packed_logits_equal_the_padded_forward_at_kept_positions(variant):
    """Padding-free forward (what compiled runs train with): the logits and the gradients
    of every trainable parameter equal the padded forward's at the kept positions, for FullFT
    and each LoRA layer kind (B drawn non-zero so the adapter path counts)."""
    from lora_lab.lora.config import LoraConfig
    from lora_lab.lora.inject import inject_lora

    model = build_model("tiny", seed=1)
    if variant != "full":
        inject_lora(model, LoraConfig(r=4, target_modules="all"), layer_kind=variant)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
    idx, keep = _prefix_batch()
    grads, logits = [], []
    for packed in (False, True):
        model.zero_grad()
        out = model.packed_logits(idx, keep) if packed else model(idx)[keep]
        assert out.shape == (int(keep.sum()), model.config.vocab_size)
        out.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        logits.append(out.detach())
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-6)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-7)


def test_masked_nll_packs_only_where_asked_and_agrees():
    from lora_lab.training.evaluation import masked_nll

    model = build_model("tiny")
    idx, keep = _prefix_batch(rows=6, width=20, seed=3)
    targets = torch.randint(1, 99, idx.shape)
    mask = keep.float()
    mask[:, :2] = 0  # prompt positions: kept (later tokens read them) but no loss
    padded, total = masked_nll(model, idx, targets, mask)
    model.pack_tokens = True
    packed, packed_total = masked_nll(model, idx, targets, mask)
    assert torch.isclose(packed, padded, rtol=1e-6) and torch.isclose(packed_total, total)


def test_packed_logits_reject_what_they_cannot_compute():
    model = build_model("tiny")
    idx, keep = _prefix_batch()
    holed = keep.clone()
    holed[0, 3] = False  # a kept position after a gap would attend to a zero key
    with pytest.raises(ValueError, match="prefix"):
        model.packed_logits(idx, holed)
    with pytest.raises(ValueError, match="bool"):
        model.packed_logits(idx, keep.float())
    with pytest.raises(ValueError, match="dense"):
        build_model("small-moe").packed_logits(idx, keep)
