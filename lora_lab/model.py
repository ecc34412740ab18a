"""Compact decoder-only transformers with Llama-style module names.

One readable file in the spirit of nanoGPT's ``model.py``. Module names follow Hugging Face's
Llama (``embed_tokens``, ``layers.{i}.self_attn.q_proj``, ``layers.{i}.mlp.gate_proj``, ...)
so that PEFT-style ``target_modules`` lists work unchanged on these models.

Shapes in comments: B batch, T time (tokens), C d_model, H heads, D head dim, E experts.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from lora_lab.threads import apply_default_threads


@dataclass
class ModelConfig:
    """Architecture of a compact model. ``n_experts == 0`` means a dense SwiGLU MLP."""

    vocab_size: int = 99
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    d_ff: int = 176  # SwiGLU hidden width (~8/3 * d_model); per expert for MoE models
    max_seq_len: int = 128
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    n_experts: int = 0
    top_k: int = 2
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if (self.d_model // self.n_head) % 2:
            raise ValueError("head dimension must be even for rotary embeddings")
        if self.n_experts and not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be in [1, n_experts={self.n_experts}]")
        for f in ("vocab_size", "n_layer", "n_head", "d_model", "d_ff", "max_seq_len"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{f} must be positive, got {getattr(self, f)}")

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (also what PEFT looks for on ``model.config``)."""
        return {**asdict(self), "model_type": "lora_lab"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# minGPT-style named presets. Parameter counts are asserted in tests/test_model.py.
PRESETS: dict[str, ModelConfig] = {
    # CI-sized: ~60k parameters, trains in seconds.
    "nano": ModelConfig(n_layer=2, n_head=4, d_model=48, d_ff=128, name="nano"),
    # ~0.21M parameters: the prototype's d64 scale, where capacity effects show quickly.
    "tiny": ModelConfig(n_layer=4, n_head=4, d_model=64, d_ff=176, name="tiny"),
    # ~1.2M parameters: the largest dense preset that pretrains in ~15 min on 2 CPU cores.
    "small": ModelConfig(n_layer=6, n_head=4, d_model=128, d_ff=344, name="small"),
    # ~1.6M parameters: nano's depth (2 layers) at 5.3x its width, so a width series holds
    # depth fixed (nano -> wide) as well as growing it (nano -> tiny -> small). Notebook 07.
    "wide": ModelConfig(n_layer=2, n_head=4, d_model=256, d_ff=688, name="wide"),
    # Mixture of experts: 8 experts, top-2 token-choice routing, ~1.9M parameters.
    "small-moe": ModelConfig(
        n_layer=4, n_head=4, d_model=128, d_ff=128, n_experts=8, top_k=2, name="small-moe"
    ),
}


def get_preset(name: str) -> ModelConfig:
    """A fresh copy of a named preset (so callers can modify it safely)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig.from_dict(PRESETS[name].to_dict())


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def rotary_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (max_len, D) for Llama's rotate-half rotary embedding."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, D)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin: (T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


KVCache = list[tuple[torch.Tensor, torch.Tensor]]
# (index (N,), keep (B, T)): which positions of a (B, T) batch a packed forward computes
Packing = tuple[torch.Tensor, torch.Tensor]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        c = cfg.d_model
        self.q_proj = nn.Linear(c, c, bias=False)
        self.k_proj = nn.Linear(c, c, bias=False)
        self.v_proj = nn.Linear(c, c, bias=False)
        self.o_proj = nn.Linear(c, c, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        split = (B, T, self.n_head, self.head_dim)
        q = self.q_proj(x).view(split).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(split).transpose(1, 2)
        v = self.v_proj(x).view(split).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, T_past + T, D)
            v = torch.cat([past[1], v], dim=2)
        if past is not None and T > 1:
            # Prefill after a cache: query i may see every cached key and new keys <= i.
            t_all = k.shape[2]
            mask = torch.ones(T, t_all, dtype=torch.bool, device=x.device).tril(t_all - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif past is None and T > 1:  # no cache: plain causal attention
            # (a branch, not is_causal=<condition>: under torch.compile with a dynamic T the
            # condition is symbolic, and SDPA takes only a plain bool)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # one token: it may see everything cached (or only itself)
            y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.o_proj(y), (k, v)

    def packed(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               packing: Packing) -> torch.Tensor:  # fmt: skip
        """Attention for the kept positions only (:meth:`CompactLM.packed_logits`): x (N, C)
        -> (N, C). The projections run on the N kept tokens; attention itself runs on the
        (B, T) grid with zeros where nothing was kept, which no kept query ever sees because
        each row keeps a prefix and attention is causal."""
        index, keep = packing  # (N,) flat positions in the (B, T) grid; (B, T) bool
        B, T = keep.shape
        C = x.shape[-1]

        def on_grid(t: torch.Tensor) -> torch.Tensor:  # (N, C) -> (B, H, T, D)
            grid = t.new_zeros(B * T, C).index_copy(0, index, t)
            return grid.view(B, T, self.n_head, self.head_dim).transpose(1, 2)

        q, k, v = on_grid(self.q_proj(x)), on_grid(self.k_proj(x)), on_grid(self.v_proj(x))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B * T, C).index_select(0, index)  # (N, C)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    """Token-choice top-k mixture of SwiGLU experts (Mixtral-style routing).

    Each token picks its ``top_k`` experts by router logit; their outputs are mixed with a
    softmax over the chosen logits. ``aux_loss`` holds the Switch-Transformer load-balancing
    term of the last forward pass so that training can keep experts in use.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.top_k, self.n_experts = cfg.top_k, cfg.n_experts
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(cfg.d_model, cfg.d_ff) for _ in range(cfg.n_experts))
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        flat = x.reshape(-1, C)  # (N, C), N = B*T
        logits = self.router(flat)  # (N, E)
        top_logits, top_idx = logits.topk(self.top_k, dim=-1)  # (N, k)
        weights = top_logits.softmax(dim=-1).to(x.dtype)  # (N, k)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = (top_idx == e).nonzero(as_tuple=True)
            if token.numel():
                y = expert(flat[token]) * weights[token, slot, None]
                out.index_add_(0, token, y)
        # Load balancing: fraction of routed slots per expert x mean router probability.
        probs = logits.softmax(dim=-1)
        load = F.one_hot(top_idx, self.n_experts).float().sum(1).mean(0) / self.top_k
        self.aux_loss = self.n_experts * (load * probs.mean(0)).sum()
        return out.view(B, T, C)

    def __getstate__(self) -> dict[str, Any]:
        # The last aux loss is part of an autograd graph; copies and pickles start afresh.
        state = super().__getstate__()
        state["aux_loss"] = torch.zeros(())
        return state


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MoE(cfg) if cfg.is_moe else MLP(cfg.d_model, cfg.d_ff)

    def forward(self, x, cos, sin, past=None, packing: Packing | None = None):
        if packing is None:  # x: (B, T, C)
            a, kv = self.self_attn(self.input_layernorm(x), cos, sin, past)
        else:  # x: (N, C), the kept tokens (CompactLM.packed_logits)
            a, kv = self.self_attn.packed(self.input_layernorm(x), cos, sin, packing), None
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, kv


class CompactLM(nn.Module):
    """A Llama-shaped causal language model: token ids (B, T) -> logits (B, T, vocab)."""

    # whether losses over masked positions use packed_logits (set where a run's steps are
    # compiled, lora_lab.training.compiled; eager runs keep the padded arithmetic)
    pack_tokens: bool = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        cos, sin = rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual output projections keeps early activations tame.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(
        self, idx: torch.Tensor, past: KVCache | None = None, return_cache: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, KVCache]:
        B, T = idx.shape
        start = 0 if past is None else past[0][0].shape[2]
        if start + T > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds max_seq_len={self.config.max_seq_len}"
            )
        cos = self.rope_cos[start : start + T]
        sin = self.rope_sin[start : start + T]
        x = self.embed_tokens(idx)  # (B, T, C)
        cache: KVCache = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, cos, sin, None if past is None else past[i])
            cache.append(kv)
        logits = self.lm_head(self.norm(x))  # (B, T, vocab)
        return (logits, cache) if return_cache else logits

    def packed_logits(self, idx: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits (N, vocab) at the N positions ``keep`` marks, in row-major order: the numbers
        of ``forward(idx)[keep]`` (up to float rounding) without computing the other positions.

        Why: a batch is padded to its longest example, so ~1/4 of a fine-tuning batch's
        positions carry no loss; projections, MLPs, norms and the head here run on the kept
        tokens only ("padding-free" training). ``keep`` (B, T) bool must mark a prefix of each
        row (e.g. up to the row's last loss position): attention then never reads a position
        left out. Dense models only (a MoE's load-balancing term counts every position)."""
        B, T = idx.shape
        if self.config.is_moe:
            raise ValueError("packed_logits: dense models only (MoE aux loss counts every token)")
        if keep.shape != idx.shape or keep.dtype != torch.bool:
            raise ValueError(f"keep must be a bool tensor of shape {tuple(idx.shape)}")
        if self.config.max_seq_len < T:
            raise ValueError(f"{T} tokens exceed max_seq_len={self.config.max_seq_len}")
        if T > 1 and bool((keep[:, 1:] & ~keep[:, :-1]).any()):
            raise ValueError("keep must mark a prefix of each row (no kept position after a gap)")
        index = keep.flatten().nonzero().squeeze(1)  # (N,)
        x = self.embed_tokens(idx.flatten().index_select(0, index))  # (N, C)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        mark = torch._dynamo.maybe_mark_dynamic if self.pack_tokens else None
        if mark:  # compiled blocks: N symbolic, one graph for every batch
            mark(index, 0)
        for layer in self.layers:
            if mark:  # each block's input is a new tensor
                mark(x, 0)
            x, _ = layer(x, cos, sin, None, (index, keep))
        return self.lm_head(self.norm(x))  # (N, vocab)

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE load-balancing terms from the last forward (0 for dense models)."""
        terms = [m.aux_loss for m in self.modules() if isinstance(m, MoE)]
        return (
            torch.stack(terms).sum()
            if terms
            else torch.zeros((), device=self.lm_head.weight.device)
        )

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample continuations of same-length prompts ``idx`` (B, T) using a KV cache.

        ``temperature=0`` is greedy. Rows that emit ``eos_id`` keep emitting it, so a batch
        stops early once every row has finished. Returns (B, T + new) token ids.
        """
        if max_new_tokens <= 0:
            raise ValueError("max_new_tokens must be positive")
        max_new_tokens = min(max_new_tokens, self.config.max_seq_len - idx.shape[1])
        logits, cache = self(idx, return_cache=True)
        out = [idx]
        done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        for step in range(max_new_tokens):
            next_logits = logits[:, -1, :]  # (B, vocab)
            if temperature == 0:
                nxt = next_logits.argmax(-1, keepdim=True)
            else:
                next_logits = next_logits / temperature
                if top_k is not None:
                    kth = next_logits.topk(min(top_k, next_logits.shape[-1])).values[:, -1:]
                    next_logits = next_logits.masked_fill(next_logits < kth, float("-inf"))
                probs = next_logits.softmax(-1)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            if eos_id is not None:
                nxt = torch.where(done[:, None], torch.full_like(nxt, eos_id), nxt)
                done |= nxt[:, 0] == eos_id
            out.append(nxt)
            if (eos_id is not None and bool(done.all())) or step == max_new_tokens - 1:
                break
            logits, cache = self(nxt, past=cache, return_cache=True)
        return torch.cat(out, dim=1)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_model(preset_or_config: str | ModelConfig, seed: int = 0) -> CompactLM:
    """A freshly initialised model (seeded, so two calls give identical weights). Work starts
    here (every model, pretrained or not, is built by this), so the thread rule applies."""
    apply_default_threads()
    cfg = get_preset(preset_or_config) if isinstance(preset_or_config, str) else preset_or_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CompactLM(cfg)


def save_model(model: CompactLM, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Write ``path.safetensors`` (weights) and ``path.json`` (config + metadata); no pickle."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path) + ".safetensors")
    meta = {"config": model.config.to_dict(), **(metadata or {})}
    Path(str(path) + ".json").write_text(json.dumps(meta, indent=2) + "\n")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> CompactLM:
    """Inverse of :func:`save_model`; rejects files whose tensors do not fit the config.
    Applies the thread rule, as :func:`build_model` does: work starts here."""
    apply_default_threads()
    path = Path(path).with_suffix("")
    meta_path, weights_path = Path(str(path) + ".json"), Path(str(path) + ".safetensors")
    if not meta_path.exists() or not weights_path.exists():
        raise FileNotFoundError(f"expected {weights_path} and {meta_path}")
    meta = json.loads(meta_path.read_text())
    model = CompactLM(ModelConfig.from_dict(meta["config"]))
    state = load_file(str(weights_path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights_path}: missing {missing}, unexpected {unexpected}")
    return model.to(device)


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON written next to a saved model (config, provenance, metrics)."""
    return json.loads(Path(str(Path(path).with_suffix("")) + ".json").read_text())


def linear_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """Every ``nn.Linear`` of a model as ``{module path: (in_features, out_features)}``,
    computed from the config alone (used to count LoRA parameters without building)."""
    c, f = cfg.d_model, cfg.d_ff
    shapes: dict[str, tuple[int, int]] = {}
    for i in range(cfg.n_layer):
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"layers.{i}.self_attn.{p}"] = (c, c)
        mlps = [f"layers.{i}.mlp"]
        if cfg.is_moe:
            shapes[f"layers.{i}.mlp.router"] = (c, cfg.n_experts)
            mlps = [f"layers.{i}.mlp.experts.{e}" for e in range(cfg.n_experts)]
        for m in mlps:
            shapes[f"{m}.gate_proj"] = (c, f)
            shapes[f"{m}.up_proj"] = (c, f)
            shapes[f"{m}.down_proj"] = (f, c)
    shapes["lm_head"] = (c, cfg.vocab_size)
    return shapes
