"""Why LoRA's best learning rate barely depends on rank: the first update, measured.

With B = 0 the first Adam step moves only B (A's gradient is zero while B is zero), by
``-lr * sign(grad B)`` per entry. The weight update is then ``(alpha/r) * sum_k db_k a_k^T``:
an average over r rank-one terms. Its projection on the loss gradient (what lowers the loss)
has the same expectation for every r; only its noise shrinks with r. This module measures
that directly for each rank at the same learning rate.
"""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import torch

from lora_lab.lora import LoraConfig, inject_lora, lora_layers
from lora_lab.tasks.base import SFTDataset
from lora_lab.training import batch_loss


def first_update(
    base: torch.nn.Module,
    data: SFTDataset,
    config: LoraConfig,
    lr: float,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """One AdamW step of LoRA from its initialisation on one batch; statistics of ΔW.

    Returns the Frobenius norm of the total weight update, its alignment with the negative
    full-weight gradient (cosine, and the first-order loss change <G, ΔW>), and the actual
    loss change on the same batch.
    """
    torch.manual_seed(seed)
    model = inject_lora(copy.deepcopy(base), config)
    inputs, targets, mask = data.tensors()
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:batch_size]
    batch = (inputs[idx], targets[idx], mask[idx])
    layers = lora_layers(model)

    # full-weight gradient G at the base point (B = 0, so the model equals the base)
    for layer in layers.values():
        layer.base_layer.weight.requires_grad_(True)
    loss0, _ = batch_loss(model, *batch)
    loss0.backward()
    grads = {n: layer.base_layer.weight.grad.clone() for n, layer in layers.items()}
    for layer in layers.values():
        layer.base_layer.weight.requires_grad_(False)
        layer.base_layer.weight.grad = None

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    opt.step()  # LoRA grads were filled by the same backward pass
    with torch.no_grad():
        deltas = {n: layer.delta_weight() for n, layer in layers.items()}
        loss1, _ = batch_loss(model, *batch)
    g = torch.cat([grads[n].flatten() for n in layers])
    d = torch.cat([deltas[n].flatten() for n in layers])
    return {
        "r": config.r,
        "lr": lr,
        "delta_norm": float(d.norm()),
        "cosine_with_neg_grad": float(-(g @ d) / (g.norm() * d.norm() + 1e-30)),
        "first_order_loss_change": float(g @ d),
        "loss_change": float(loss1 - loss0.detach()),
    }


def first_update_table(
    base: torch.nn.Module,
    data: SFTDataset,
    ranks: list[int],
    lr: float,
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`first_update` for every rank and seed (different seeds: different A init)."""
    rows = [
        first_update(base, data, LoraConfig(r=r, **kwargs), lr, seed=s) | {"seed": s}
        for r in ranks
        for s in seeds
    ]
    return pd.DataFrame(rows)
