"""Putting adapters into a model and taking them out: target matching (PEFT's rules),
injection through the layer dispatch list, merge / unmerge / unload, parameter counts."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch.nn as nn

from lora_lab.lora.config import TARGET_PRESETS, LoraConfig, _check_targets
from lora_lab.lora.dispatch import check_layer_kind, default_layer_kind, make_lora_layer
from lora_lab.lora.layer import is_lora_layer
from lora_lab.model import ModelConfig, linear_shapes

if TYPE_CHECKING:
    import pandas as pd


def match_targets(names: Iterable[str], target_modules: str | Sequence[str]) -> list[str]:
    """Module paths among ``names`` selected by ``target_modules`` (PEFT's matching rules).

    Presets and list entries match a path equal to the entry or ending in ``.entry``; any
    other string is a regex that must match the whole path. Unlike PEFT, every requested
    entry must match something, so a misspelt name is an error instead of a silent no-op.
    """
    names = list(names)
    target_modules = _check_targets(target_modules)
    if isinstance(target_modules, str) and target_modules not in TARGET_PRESETS:
        pattern = re.compile(target_modules)
        chosen = [n for n in names if pattern.fullmatch(n)]
        if not chosen:
            raise ValueError(f"regex {target_modules!r} matches no module; {_available(names)}")
        return chosen
    keys = TARGET_PRESETS[target_modules] if isinstance(target_modules, str) else target_modules
    chosen, unmatched = [], []
    for key in keys:
        hits = [n for n in names if n == key or n.endswith("." + key)]
        if not hits:
            unmatched.append(key)
        chosen.extend(h for h in hits if h not in chosen)
    if unmatched:
        raise ValueError(f"target_modules {unmatched} match no module; {_available(names)}")
    return [n for n in names if n in chosen]  # keep model order


def _available(names: Sequence[str]) -> str:
    suffixes = sorted({n.split(".")[-1] for n in names if n})
    return f"module names that exist: {suffixes}"


def _top_k(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    return cfg.top_k if isinstance(cfg, ModelConfig) and cfg.is_moe else 1


def inject_lora(model: nn.Module, config: LoraConfig, layer_kind: str | None = None
                ) -> nn.Module:  # fmt: skip
    """Freeze ``model`` and wrap every targeted module in a LoRA layer of ``layer_kind``
    ("reference" or "fused"; default ``$LORA_LAB_LORA_LAYER``, else "reference"), chosen
    by the dispatch list (:data:`lora_lab.lora.dispatch.LAYER_DISPATCH`). The kind asked
    for is kept as ``model.lora_layer_kind``.

    Works in place and returns the model. Raises ``ValueError`` if a target matches nothing
    or names a module no LoRA layer kind handles (embeddings, norms, whole blocks).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"inject_lora needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, LoraConfig):
        raise TypeError(f"inject_lora needs a LoraConfig, got {type(config).__name__}")
    if any(is_lora_layer(m) for m in model.modules()):
        raise ValueError("model already has LoRA adapters; call unload() first")
    names = [n for n, _ in model.named_modules() if n]
    chosen = match_targets(names, config.target_modules)
    modules = dict(model.named_modules())
    top_k = _top_k(model)
    shapes = {n: (m.in_features, m.out_features) for n, m in modules.items() if n in chosen
              and isinstance(m, nn.Linear)}  # fmt: skip
    too_big = oversized_ranks(shapes, config, top_k)
    if too_big:  # said before the adapters are allocated
        warnings.warn(too_big, stacklevel=2)
    kind = default_layer_kind() if layer_kind is None else check_layer_kind(layer_kind)
    layers = {n: make_lora_layer(modules[n], config, config.rank_for(n, top_k), kind)
              for n in chosen}  # fmt: skip
    unhandled = [n for n, layer in layers.items() if layer is None]
    if unhandled:
        raise ValueError(
            "LoRA targets must be nn.Linear; these are not: "
            + ", ".join(f"{n} ({type(modules[n]).__name__})" for n in unhandled)
        )
    for p in model.parameters():
        p.requires_grad_(False)
    for name, layer in layers.items():
        for p in layer.parameters():  # the new adapter weights train; the wrapped base does not
            p.requires_grad_(False)
        for p in (*layer.lora_A.parameters(), *layer.lora_B.parameters()):
            p.requires_grad_(True)
        _replace(model, name, layer)
    model.lora_config = config  # type: ignore[assignment]
    model.lora_layer_kind = kind  # type: ignore[assignment]
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every LoRA layer of ``model`` by module path."""
    return {n: m for n, m in model.named_modules() if n and is_lora_layer(m)}


@contextmanager
def disabled_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """The base model, inside the block: every adapter switched off, nothing copied (PEFT's
    ``disable_adapter()``). DPO's reference for a LoRA learner is this — the starting model
    costs no second copy of the weights. Merged adapters cannot be switched off."""
    layers = list(lora_layers(model).values())
    if any(layer.merged for layer in layers):
        raise ValueError("unmerge the adapters before disabling them (merged into W, they stay)")
    before = [layer.disabled for layer in layers]
    for layer in layers:
        layer.disabled = True
    try:
        yield model
    finally:
        for layer, was in zip(layers, before, strict=True):
            layer.disabled = was


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (forward is then a plain Linear)."""
    for layer in lora_layers(model).values():
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def unload(model: nn.Module, merge_weights: bool = True) -> nn.Module:
    """Replace each LoRA layer by its base Linear (merged first by default, as PEFT's
    ``merge_and_unload``); all parameters become trainable again."""
    for name, layer in lora_layers(model).items():
        if merge_weights:
            layer.merge()
        else:
            layer.unmerge()
        _replace(model, name, layer.base_layer)
    for p in model.parameters():
        p.requires_grad_(True)
    for attr in ("lora_config", "lora_layer_kind"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


def module_group(name: str) -> str:
    """Which part of the network a parameter or module path belongs to."""
    if ".experts." in name:
        return "experts"
    if ".router" in name:
        return "router"
    if ".self_attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    if name.startswith(("embed_tokens", "lm_head")):
        return "embeddings"
    return "norms"


def parameter_report(model: nn.Module) -> pd.DataFrame:
    """Total and trainable parameters by group (attention / mlp / experts / ...), with share.

    The last row, ``total``, sums the groups; ``trainable_share`` is trainable / total.
    """
    import pandas as pd  # here, not at import: lora_lab loads in torch's time

    rows: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        key = module_group(name)
        row = rows.setdefault(key, [0, 0])
        is_lora = ".lora_A." in name or ".lora_B." in name
        if not is_lora:
            row[0] += p.numel()
        if p.requires_grad:
            row[1] += p.numel()
    df = pd.DataFrame(
        [(k, v[0], v[1]) for k, v in rows.items()], columns=["group", "base_params", "trainable"]
    )
    total = pd.DataFrame([("total", df.base_params.sum(), df.trainable.sum())], columns=df.columns)
    df = pd.concat([df, total], ignore_index=True)
    df["share_of_base"] = df.base_params / df.base_params.iloc[-1]
    df["trainable_share"] = df.trainable / df.base_params.iloc[-1]
    return df.set_index("group")


def oversized_ranks(targets: dict[str, tuple[int, int]], config: LoraConfig, top_k: int = 1
                    ) -> str | None:  # fmt: skip
    """A sentence on the targeted matrices (``targets``: name -> (d_in, d_out)) whose rank
    exceeds their smallest dimension (PEFT allows it), with what it costs; None when every
    rank fits. Past min(d_in, d_out) a product B @ A gains no expressiveness, only
    parameters."""
    shapes = targets
    over = {n: config.rank_for(n, top_k) for n in shapes
            if config.rank_for(n, top_k) > min(shapes[n])}  # fmt: skip
    if not over:
        return None
    adapter = sum(r * sum(shapes[n]) for n, r in over.items())
    dense = sum(shapes[n][0] * shapes[n][1] for n in over)
    first = next(iter(over))
    return (f"LoRA rank {over[first]} exceeds the smallest dimension of {len(over)} targeted "
            f"matrices (e.g. {first}: {shapes[first][0]} x {shapes[first][1]}): their adapters "
            f"hold {adapter:,} parameters, {adapter / dense:.1f}x the matrices they adapt, and "
            f"can express nothing a rank of {min(shapes[first])} cannot")  # fmt: skip


def count_lora_params(model_config: ModelConfig, lora_config: LoraConfig) -> int:
    """LoRA parameters that ``inject_lora`` would add, computed without building a model:
    r * (d_in + d_out) per targeted matrix (per-expert rank on MoE experts)."""
    if not isinstance(model_config, ModelConfig):
        raise TypeError(f"need a ModelConfig (model.config), got {type(model_config).__name__}")
    shapes = linear_shapes(model_config)
    top_k = model_config.top_k if model_config.is_moe else 1
    chosen = match_targets(shapes, lora_config.target_modules)
    return sum(lora_config.rank_for(n, top_k) * sum(shapes[n]) for n in chosen)
