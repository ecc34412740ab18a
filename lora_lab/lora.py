"""LoRA exactly as HF PEFT and "LoRA Without Regret" define it.

``W' = W + (lora_alpha / r) * B @ A`` with ``A`` (r x d_in) drawn from
``kaiming_uniform(a=sqrt(5))`` = U(+-1/sqrt(d_in)) and ``B`` (d_out x r) zero, so an adapted
model starts out *identical* to its base. Names (``lora_A``, ``lora_B``, ``r``,
``lora_alpha``, ``target_modules``, ``use_rslora``) are PEFT's; tests/test_peft_crosscheck.py
checks outputs and gradients against PEFT itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from lora_lab.model import ModelConfig, linear_shapes

ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    "attn": ATTN_MODULES,
    "mlp": MLP_MODULES,
    # Every projection inside the blocks. The MoE router (d x n_experts) is left out: it
    # decides routing rather than transforming features; name "router" to include it.
    "all": ATTN_MODULES + MLP_MODULES,
}


@dataclass
class LoraConfig:
    """What to adapt and how. Mirrors ``peft.LoraConfig``'s fields of the same names.

    ``target_modules``: ``"attn"``, ``"mlp"``, ``"all"``, a list of module names (suffix
    match, as PEFT) or any other string as a regex that must match a full module path.
    ``expert_r``: rank of each MoE expert's adapter; ``None`` means ``max(1, r // top_k)``, the
    post's rule that keeps the LoRA/FullFT parameter ratio of MoE layers equal to dense ones.
    """

    r: int = 8
    lora_alpha: float = 32.0
    target_modules: str | Sequence[str] = "all"
    lora_dropout: float = 0.0
    use_rslora: bool = False
    expert_r: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"r must be a positive integer, got {self.r!r}")
        if self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be positive, got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.expert_r is not None and self.expert_r <= 0:
            raise ValueError(f"expert_r must be positive, got {self.expert_r!r}")
        if isinstance(self.target_modules, str):
            if not self.target_modules.strip():
                raise ValueError("target_modules is empty")
        else:
            self.target_modules = list(self.target_modules)
            if not self.target_modules:
                raise ValueError("target_modules is empty")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaling(self, r: int) -> float:
        """alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA (rsLoRA)."""
        return self.lora_alpha / (math.sqrt(r) if self.use_rslora else r)

    def rank_for(self, module_name: str, top_k: int = 1) -> int:
        """Rank of the adapter on ``module_name`` (experts get their per-expert rank)."""
        if ".experts." in module_name:
            return self.expert_r if self.expert_r is not None else max(1, self.r // top_k)
        return self.r


class LoRALinear(nn.Module):
    """A frozen ``base_layer`` plus a trainable low-rank update ``scaling * B @ A``."""

    def __init__(
        self,
        base_layer: nn.Linear,
        r: int,
        lora_alpha: float = 32.0,
        lora_dropout: float = 0.0,
        use_rslora: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"LoRA wraps nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.r = r
        self.lora_alpha = lora_alpha
        self.scaling = lora_alpha / (math.sqrt(r) if use_rslora else r)
        w = base_layer.weight
        self.lora_A = nn.Linear(
            base_layer.in_features, r, bias=False, device=w.device, dtype=w.dtype
        )
        self.lora_B = nn.Linear(
            r, base_layer.out_features, bias=False, device=w.device, dtype=w.dtype
        )
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()
        for p in self.base_layer.parameters():
            p.requires_grad_(False)

    def reset_lora_parameters(self) -> None:
        # PEFT's default (init_lora_weights=True): A ~ kaiming_uniform(a=sqrt(5)), B = 0.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update this adapter adds to W: scaling * B @ A, shape (out, in)."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        return result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base_layer.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_layer.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, lora_alpha={self.lora_alpha}, scaling={self.scaling:g}"


def match_targets(names: Iterable[str], target_modules: str | Sequence[str]) -> list[str]:
    """Module paths among ``names`` selected by ``target_modules`` (PEFT's matching rules).

    Presets and list entries match a path equal to the entry or ending in ``.entry``; any
    other string is a regex that must match the whole path. Unlike PEFT, every requested
    entry must match something, so a misspelt name is an error instead of a silent no-op.
    """
    names = list(names)
    if isinstance(target_modules, str) and target_modules in TARGET_PRESETS:
        keys: Sequence[str] | None = TARGET_PRESETS[target_modules]
    elif isinstance(target_modules, str):
        keys = None
    else:
        keys = list(target_modules)
    if keys is None:
        pattern = re.compile(target_modules)  # type: ignore[arg-type]
        chosen = [n for n in names if pattern.fullmatch(n)]
        if not chosen:
            raise ValueError(f"regex {target_modules!r} matches no module; {_available(names)}")
        return chosen
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


def inject_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Freeze ``model`` and wrap every targeted ``nn.Linear`` in a :class:`LoRALinear`.

    Works in place and returns the model. Raises ``ValueError`` if a target matches nothing
    or names something that is not a Linear (embeddings, norms, whole blocks).
    """
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("model already has LoRA adapters; call unload() first")
    names = [n for n, _ in model.named_modules() if n]
    chosen = match_targets(names, config.target_modules)
    modules = dict(model.named_modules())
    not_linear = [n for n in chosen if not isinstance(modules[n], nn.Linear)]
    if not_linear:
        raise ValueError(
            "LoRA targets must be nn.Linear; these are not: "
            + ", ".join(f"{n} ({type(modules[n]).__name__})" for n in not_linear)
        )
    for p in model.parameters():
        p.requires_grad_(False)
    top_k = _top_k(model)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = LoRALinear(
            modules[name],
            r=config.rank_for(name, top_k),
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            use_rslora=config.use_rslora,
        )
        setattr(parent, child, layer)
    model.lora_config = config  # type: ignore[assignment]
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


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
    """Replace each LoRALinear by its base Linear (merged first by default, as PEFT's
    ``merge_and_unload``); all parameters become trainable again."""
    for name, layer in lora_layers(model).items():
        if merge_weights:
            layer.merge()
        else:
            layer.unmerge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.base_layer)
    for p in model.parameters():
        p.requires_grad_(True)
    if hasattr(model, "lora_config"):
        del model.lora_config
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


def count_lora_params(model_config: ModelConfig, lora_config: LoraConfig) -> int:
    """LoRA parameters that ``inject_lora`` would add, computed without building a model:
    r * (d_in + d_out) per targeted matrix (per-expert rank on MoE experts)."""
    shapes = linear_shapes(model_config)
    top_k = model_config.top_k if model_config.is_moe else 1
    chosen = match_targets(shapes, lora_config.target_modules)
    return sum(lora_config.rank_for(n, top_k) * sum(shapes[n]) for n in chosen)
