"""Circulating claims get a computed status (never a typed one), and claims the design cannot
reach say so instead of borrowing a verdict."""

from __future__ import annotations

import pytest

from lora_lab.analysis import load_runs
from lora_lab.findings.common import CLAIM_STATUSES, Claim, claims_table, untestable
from lora_lab.model import PRESETS, build_model
from lora_lab.sweeps import results_dir


def test_a_claim_refuses_an_unknown_status_and_reads_as_one_line():
    with pytest.raises(ValueError, match="status"):
        Claim("x", "circulating", "same", "evidence")
    c = untestable("batch > 512 hurts LoRA", "circulating", "the largest batch here is 256")
    assert c.status == "not testable in this design" and c.status in CLAIM_STATUSES
    assert c.text.startswith('"batch > 512 hurts LoRA" (circulating): not testable')
    assert list(claims_table([c]).columns) == ["claim", "source", "status", "evidence"]


def test_mlp_share_is_counted_per_preset():
    """Recount with the model's own modules (independently of parameter_group)."""
    from lora_lab.findings.targeting import MLP_SHARE_TOLERANCE, mlp_share_claim, mlp_shares

    shares = mlp_shares().set_index("preset")
    assert set(shares.index) == set(PRESETS)
    for name, cfg in PRESETS.items():
        model = build_model(cfg)
        mlp = sum(p.numel() for layer in model.layers for p in layer.mlp.parameters())
        attn = sum(p.numel() for layer in model.layers for p in layer.self_attn.parameters())
        assert shares.mlp_of_blocks[name] == pytest.approx(mlp / (mlp + attn)), name
    dense = shares[~shares.index.str.contains("moe")]
    inside = ((dense.mlp_of_blocks - 0.70).abs() <= MLP_SHARE_TOLERANCE).all()
    assert mlp_share_claim().status == ("holds" if inside else "does not hold")


def test_rl_memory_claim_counts_bytes_at_the_rl_shape():
    from lora_lab.findings.compute import rl_memory_claim

    c = rl_memory_claim()
    assert c.status in ("holds", "does not hold")
    assert "8 x 8 sequences" in c.evidence and "MiB" in c.evidence
    # optimizer state alone: 2 fp32 moments per trainable parameter
    assert "optimizer state alone" in c.evidence


def test_savings_claim_needs_both_parameters_and_time():
    from lora_lab.findings.compute import load_benchmark, savings_claim

    c = savings_claim(load_benchmark())
    assert c.status == "does not hold"  # a step runs the frozen model forward and backward
    assert "fewer trainable parameters" in c.evidence and "FullFT's time" in c.evidence


def test_large_data_claim_reads_relative_loss_and_says_the_unit():
    from lora_lab.findings.capacity import large_data_claim

    c = large_data_claim(load_runs(results_dir("rank_curves")))
    assert c.status in CLAIM_STATUSES and "states no unit" in c.evidence
    assert "r=1" in c.evidence and "[" in c.evidence


def test_small_data_claims_follow_their_verdicts():
    import pandas as pd

    from lora_lab.findings.capacity import rank_8_16_claim

    def gaps(v8: str, v16: str) -> pd.DataFrame:
        return pd.DataFrame({"metric": "final_loss", "label": ["r=8", "r=16"],
                             "verdict": [v8, v16], "verdict_text": ["t8 [", "t16 ["],
                             "seeds": 7})  # fmt: skip

    eq = "equivalent within ±0.02"
    assert rank_8_16_claim(gaps(eq, eq)).status == "holds"
    assert rank_8_16_claim(gaps(eq, "LoRA worse")).status == "does not hold"
    assert rank_8_16_claim(gaps(eq, "not resolved")).status == "not resolved"
