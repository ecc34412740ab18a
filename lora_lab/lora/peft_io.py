"""Adapters on disk in HF PEFT's format, so they move freely between lora_lab and PEFT.

``adapter_model.safetensors`` holds ``base_model.model.<module path>.lora_A.weight`` /
``.lora_B.weight``; ``adapter_config.json`` holds PEFT's LoraConfig fields. lora_lab adds a
fingerprint of the base weights to the safetensors metadata, so loading an adapter onto a
different base is caught instead of silently producing nonsense.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from lora_lab._version import __version__
from lora_lab.lora.config import TARGET_PRESETS, LoraConfig
from lora_lab.lora.inject import inject_lora, lora_layers

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
PREFIX = "base_model.model."
_EXPERT_PATTERN = r"experts\.\d+\.(gate_proj|up_proj|down_proj)"


def base_fingerprint(model: nn.Module) -> str:
    """Short hash of the frozen base weights (adapters and merged deltas excluded)."""
    h = hashlib.sha256()
    layers = lora_layers(model)
    merged = [layer for layer in layers.values() if layer.merged]
    for layer in merged:
        layer.unmerge()
    try:
        for name, t in sorted(model.state_dict().items()):
            if ".lora_A." in name or ".lora_B." in name:
                continue
            h.update(name.replace(".base_layer", "").encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    finally:
        for layer in merged:
            layer.merge()
    return h.hexdigest()[:16]


def _peft_config(config: LoraConfig, model: nn.Module) -> dict[str, Any]:
    targets = config.target_modules
    if isinstance(targets, str) and targets in TARGET_PRESETS:
        targets = list(TARGET_PRESETS[targets])
    # Expert adapters have their own rank: PEFT expresses that with rank_pattern.
    expert_ranks = {layer.r for n, layer in lora_layers(model).items() if ".experts." in n}
    rank_pattern = {_EXPERT_PATTERN: expert_ranks.pop()} if expert_ranks else {}
    cfg = getattr(model, "config", None)
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": getattr(cfg, "name", None),
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": targets,
        "lora_dropout": config.lora_dropout,
        "use_rslora": config.use_rslora,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "rank_pattern": rank_pattern,
        "alpha_pattern": {},
        "inference_mode": True,
    }


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write the model's adapters as a PEFT adapter directory; returns the directory."""
    config: LoraConfig | None = getattr(model, "lora_config", None)
    layers = lora_layers(model)
    if config is None or not layers:
        raise ValueError("model has no LoRA adapters to save (call inject_lora first)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, layer in layers.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight.detach().cpu().contiguous()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight.detach().cpu().contiguous()
    meta = {"format": "pt", "lora_lab_base": base_fingerprint(model), "lora_lab": __version__}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata=meta)
    (directory / CONFIG_NAME).write_text(json.dumps(_peft_config(config, model), indent=2) + "\n")
    return directory


def _config_from_peft(d: Any) -> LoraConfig:
    if not isinstance(d, dict):
        raise ValueError(f"adapter config must be a JSON object, got {type(d).__name__}")
    if "r" not in d or "lora_alpha" not in d or "target_modules" not in d:
        missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in d]
        raise ValueError(f"adapter config lacks {missing}")
    if d.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"not a LoRA adapter: peft_type={d.get('peft_type')!r}")
    rank_pattern = d.get("rank_pattern") or {}
    unsupported = [k for k in rank_pattern if k != _EXPERT_PATTERN]
    if unsupported or d.get("alpha_pattern"):
        raise ValueError(f"rank/alpha patterns other than experts are not supported: {unsupported}")
    return LoraConfig(
        r=int(d["r"]),
        lora_alpha=float(d["lora_alpha"]),
        target_modules=d["target_modules"],
        lora_dropout=float(d.get("lora_dropout") or 0.0),
        use_rslora=bool(d.get("use_rslora", False)),
        expert_r=rank_pattern.get(_EXPERT_PATTERN),
    )


def load_adapter(model: nn.Module, directory: str | Path, check_base: bool = True) -> nn.Module:
    """Inject LoRA as described by a PEFT adapter directory and load its weights.

    Raises ``ValueError`` with the reason when a file is corrupted, a tensor is missing or
    has the wrong shape, a key is unknown, or (``check_base``) the adapter was trained on a
    different base model.
    """
    directory = Path(directory)
    weights, cfg_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    if not weights.exists() or not cfg_path.exists():
        raise FileNotFoundError(f"{directory} needs {WEIGHTS_NAME} and {CONFIG_NAME}")
    try:
        config = _config_from_peft(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{cfg_path}: unreadable adapter config ({e})") from e
    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{weights}: not a readable safetensors file ({e})") from e
    if check_base and "lora_lab_base" in meta:
        found = base_fingerprint(model)
        if found != meta["lora_lab_base"]:
            raise ValueError(
                f"adapter was trained on a different base (fingerprint {meta['lora_lab_base']}, "
                f"this model {found}); pass check_base=False to load anyway"
            )
    if not lora_layers(model):
        inject_lora(model, config)
    layers = lora_layers(model)
    expected = {}
    for name, layer in layers.items():
        expected[f"{PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight
        expected[f"{PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight
    unknown = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    if unknown or missing:
        raise ValueError(
            f"adapter keys do not fit the model: unknown {unknown[:5]}, missing {missing[:5]}"
        )
    for key, param in expected.items():
        if tensors[key].shape != param.shape:
            raise ValueError(
                f"{key}: shape {tuple(tensors[key].shape)} in file, {tuple(param.shape)} in model"
            )
    with torch.no_grad():
        for key, param in expected.items():
            param.copy_(tensors[key].to(param.device, param.dtype))
    return model
