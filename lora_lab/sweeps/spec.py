"""Typed run specs: everything needed to redo one fine-tuning run, and its stable key.

A :class:`RunSpec` is what a sweep declares and what a record stores. Every field reaches the
trainer or is refused: an unknown field is an error that lists the valid ones, so a spec can
never claim a run (``use_rslora=True``, say) that did not happen.

Stored form: a flat JSON object (``method`` is ``"full"`` or ``"lora"``; the LoRA fields sit
beside it), complete with defaults so a record reads on its own. The key is a hash of the
*canonical* form, which leaves out every field at its default: adding a field with a
default to this class later changes no existing key.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from lora_lab.lora import LAYER_KINDS
from lora_lab.lora.config import LoraConfig
from lora_lab.lora.inject import match_targets, oversized_ranks
from lora_lab.model import PRESETS, linear_shapes
from lora_lab.tasks import PREFERENCE_TASKS, SPLITS, TASKS, check_task_args
from lora_lab.training.dpo import DPO_BETA
from lora_lab.training.methods import FullFT, as_method, method_label
from lora_lab.training.optim import ADAM_BETAS, MOE_AUX_LOSS_COEF
from lora_lab.training.settings import DPOSettings, EvalSettings, OptimSettings, RLSettings
from lora_lab.training.warm_start import WARM_STARTS

OBJECTIVES = ("sft", "rl", "dpo")
# fields that only policy-gradient RL reads, and the SFT-only ones it refuses
RL_FIELDS = ("group_size", "max_new_tokens", "temperature", "kl_coef")
SFT_ONLY_FIELDS = ("accuracy_limit", "measure_bits")  # and epochs: RL counts steps
DPO_FIELDS = ("dpo_beta", "sft_coef")  # fields that only DPO reads
# the fields each objective owns: any other objective refuses them away from their defaults
OWN_FIELDS = {"sft": (), "rl": RL_FIELDS, "dpo": DPO_FIELDS}
LORA_FIELDS = LoraConfig.field_names()  # r, lora_alpha, target_modules, lora_dropout, ...
LORA_ONLY_FIELDS = tuple(f for f in LORA_FIELDS if f != "target_modules")
_LORA_DEFAULTS = LoraConfig().to_dict()


def spec_hash(data: dict[str, Any]) -> str:
    """Stable 12-hex-digit hash of a JSON-able dict (same dict, same key, in every process)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _frozen(target_modules: Any) -> str | tuple[str, ...]:
    return target_modules if isinstance(target_modules, str) else tuple(target_modules)


@functools.lru_cache(maxsize=128)
def _targeted_shapes(base: str, target_modules: str | tuple[str, ...]
                     ) -> tuple[tuple[tuple[str, tuple[int, int]], ...], int]:  # fmt: skip
    """((name, (d_in, d_out)) of each matrix ``target_modules`` selects in ``base``, top_k):
    the same for every spec of a grid, so matched once per process (a sweep declares
    thousands of specs; an error raised here is raised again, as it is not cached)."""
    config = PRESETS[base if base in PRESETS else WARM_STARTS[base].base]
    shapes = linear_shapes(config)
    chosen = match_targets(list(shapes), list(target_modules)
                           if isinstance(target_modules, tuple) else target_modules)  # fmt: skip
    return tuple((n, shapes[n]) for n in chosen), (config.top_k if config.is_moe else 1)


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run: base, task (+ kwargs), method, optimisation, evaluation, seed."""

    # what is trained, on what
    base: str
    task: str
    lr: float
    method: FullFT | LoraConfig = field(default_factory=FullFT)
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_split: str = "test"
    # optimisation
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    grad_accum: int = 1
    schedule: str = "constant"
    warmup_steps: int = 0
    betas: tuple[float, float] = ADAM_BETAS
    weight_decay: float = 0.0
    aux_loss_coef: float = MOE_AUX_LOSS_COEF
    # evaluation
    evals_per_decade: int = 4
    eval_limit: int | None = 512
    accuracy_limit: int = 0
    measure_bits: bool = False
    # objective: "sft" learns the task's reference completions; "rl" learns from its verifier
    # by policy gradient, ``batch_size`` prompts per step, each sampled ``group_size`` times
    objective: str = "sft"
    group_size: int = 8
    max_new_tokens: int = 48
    temperature: float = 1.0
    kl_coef: float = 0.0
    # "dpo" learns from the preference pairs of a task with rejected completions (facts_prefs,
    # arith_prefs), ``batch_size`` pairs per step, against the starting model
    dpo_beta: float = DPO_BETA
    sft_coef: float = 0.0
    # implementation: which LoRA layer runs the maths (same numbers up to float rounding;
    # "reference" is what every shipped record ran, so their keys and numbers stay put)
    lora_layer: str = "reference"
    # randomness and bookkeeping
    seed: int = 0
    experiment: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", as_method(self.method))
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        if not isinstance(self.base, str) or self.base not in (*PRESETS, *WARM_STARTS):
            raise ValueError(
                f"base must be a preset {sorted(PRESETS)} or a warm start {sorted(WARM_STARTS)}, "
                f"got {self.base!r}"
            )
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        if not isinstance(self.task_kwargs, dict):
            raise ValueError(f"task_kwargs must be a dict, got {self.task_kwargs!r}")
        check_task_args(self.task, self.task_kwargs)
        if self.eval_split not in SPLITS[self.task]:
            raise ValueError(
                f"task {self.task!r} has splits {list(SPLITS[self.task])}, not {self.eval_split!r}"
            )
        if not isinstance(self.measure_bits, bool):
            raise ValueError(f"measure_bits must be True or False, got {self.measure_bits!r}")
        if self.lora_layer not in LAYER_KINDS:
            raise ValueError(f"lora_layer must be one of {LAYER_KINDS}, got {self.lora_layer!r}")
        if self.lora_layer != "reference" and not self.is_lora:
            raise ValueError(f"lora_layer={self.lora_layer!r} applies to LoRA runs, not FullFT")
        self._check_objective()
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.experiment is not None and not isinstance(self.experiment, str):
            raise ValueError(f"experiment must be a name, got {self.experiment!r}")
        self.optim, self.evaluation  # noqa: B018 - built once here: the settings check themselves
        if self.is_lora:  # said when declared; PEFT allows it, so it is a warning
            targets, top_k = _targeted_shapes(self.base, _frozen(self.method.target_modules))
            too_big = oversized_ranks(dict(targets), self.method, top_k)
            if too_big:
                warnings.warn(too_big, stacklevel=3)

    def _check_objective(self) -> None:
        """Fields that the chosen objective would not read are refused, never ignored."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for other, owned in OWN_FIELDS.items():
            changed = [f for f in owned if getattr(self, f) != _DEFAULTS[f]]
            if other != self.objective and changed:
                raise ValueError(f"{changed} apply to objective={other!r} only")
        if self.objective == "sft":
            return
        if self.objective == "dpo":
            if self.task not in PREFERENCE_TASKS:
                raise ValueError(
                    f"objective='dpo' needs a preference task {list(PREFERENCE_TASKS)}, "
                    f"got {self.task!r}"
                )
            if self.measure_bits:
                raise ValueError("measure_bits applies to objective='sft' only")
            self.dpo  # noqa: B018 - checks itself
            return
        if self.epochs is not None:
            raise ValueError("an RL run is measured in steps: give steps, not epochs")
        changed = [f for f in SFT_ONLY_FIELDS if getattr(self, f) != _DEFAULTS[f]]
        if changed:  # RL always measures accuracy; bits are an SFT-on-facts measurement
            raise ValueError(f"{changed} apply to objective='sft' only")
        self.rl  # noqa: B018 - checks itself

    # ------------------------------------------------------------------ settings objects
    @property
    def optim(self) -> OptimSettings:
        """How this run optimises (what the trainers take)."""
        return OptimSettings(lr=self.lr, steps=self.steps, epochs=self.epochs,
                             batch_size=self.batch_size, grad_accum=self.grad_accum,
                             schedule=self.schedule, warmup_steps=self.warmup_steps,
                             betas=tuple(self.betas), weight_decay=self.weight_decay,
                             aux_loss_coef=self.aux_loss_coef)  # fmt: skip

    @property
    def evaluation(self) -> EvalSettings:
        return EvalSettings(self.evals_per_decade, self.eval_limit, self.accuracy_limit)

    @property
    def rl(self) -> RLSettings:
        return RLSettings(self.group_size, self.max_new_tokens, self.temperature, self.kl_coef)

    @property
    def dpo(self) -> DPOSettings:
        return DPOSettings(self.dpo_beta, self.sft_coef)

    # ------------------------------------------------------------------ names and keys
    @property
    def is_lora(self) -> bool:
        return isinstance(self.method, LoraConfig)

    @property
    def label(self) -> str:
        """The method's human label ("FullFT", "r=4 attn", ...)."""
        return method_label(self.method)

    @functools.cached_property
    def key(self) -> str:
        """The record key: hash of :meth:`canonical` (computed once per spec: it is frozen)."""
        return spec_hash(self.canonical())

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every field of the stored (flat) form."""
        own = tuple(f.name for f in fields(cls) if f.name != "method")
        return ("method", *LORA_FIELDS, *own)

    # ------------------------------------------------------------------ stored form
    def to_dict(self) -> dict[str, Any]:
        """The complete flat form that records store (every field, defaults included)."""
        out: dict[str, Any] = {}
        if self.experiment is not None:
            out["experiment"] = self.experiment
        out.update(base=self.base, task=self.task, task_kwargs=_jsonable(self.task_kwargs))
        out["eval_split"] = self.eval_split
        if self.is_lora:
            out["method"] = "lora"
            out.update(_jsonable(self.method.to_dict()))
        else:
            out["method"] = "full"
            out["target_modules"] = _jsonable(self.method.target_modules)
        # an objective's own fields are stored only for that objective (so records of the
        # other objectives read as they did before those fields existed)
        skip = {"method", "experiment"}
        skip.update(f for other, owned in OWN_FIELDS.items() if other != self.objective
                    for f in owned)  # fmt: skip
        for f in fields(self):
            if f.name not in out and f.name not in skip:
                out[f.name] = _jsonable(getattr(self, f.name))
        return out

    def canonical(self) -> dict[str, Any]:
        """:meth:`to_dict` without the fields that sit at their defaults (the key's input)."""
        defaults = dict(_DEFAULTS)
        if self.is_lora:
            defaults.update(_jsonable(_LORA_DEFAULTS))
            defaults.pop("r")  # a LoRA spec always names its rank
        else:
            defaults["target_modules"] = None
        missing = object()
        return {k: v for k, v in self.to_dict().items() if v != defaults.get(k, missing)}

    @classmethod
    def from_dict(cls, data: Any) -> RunSpec:
        """Parse the stored form; unknown fields and fields of the other method are errors."""
        if isinstance(data, RunSpec):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"a run spec is a dict, got {type(data).__name__}")
        valid = cls.field_names()
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown run spec field(s) {unknown}; valid fields: {list(valid)}")
        d = dict(data)
        kind = d.pop("method", "full")
        lora = {k: d.pop(k) for k in LORA_FIELDS if k in d}
        if kind == "lora":
            if "r" not in lora:
                raise ValueError("a LoRA run spec needs r (its rank)")
            if isinstance(lora.get("target_modules"), tuple):
                lora["target_modules"] = list(lora["target_modules"])
            method: FullFT | LoraConfig = LoraConfig(**lora)
        elif kind == "full":
            wrong = sorted(k for k in lora if k != "target_modules")
            if wrong:
                raise ValueError(f"{wrong} apply to method='lora' only, not to method='full'")
            targets = lora.get("target_modules")
            method = FullFT(tuple(targets) if isinstance(targets, list) else targets)
        else:
            raise ValueError(f"method must be 'full' or 'lora', got {kind!r}")
        for name in ("lr", "weight_decay", "aux_loss_coef", "temperature", "kl_coef", "dpo_beta",
                     "sft_coef"):  # fmt: skip
            if isinstance(d.get(name), int) and not isinstance(d.get(name), bool):
                d[name] = float(d[name])
        if isinstance(d.get("betas"), list):
            d["betas"] = tuple(d["betas"])
        try:
            return cls(method=method, **d)
        except TypeError as e:  # a required field is missing
            raise ValueError(f"incomplete run spec ({e}); it needs base, task and lr") from None

    def replace(self, **changes: Any) -> RunSpec:
        return replace(self, **changes)


def as_spec(spec: RunSpec | dict[str, Any]) -> RunSpec:
    return spec if isinstance(spec, RunSpec) else RunSpec.from_dict(spec)


_DEFAULTS: dict[str, Any] = {
    f.name: _jsonable(f.default if f.default is not MISSING else f.default_factory())
    for f in fields(RunSpec)
    if f.name != "method" and (f.default is not MISSING or f.default_factory is not MISSING)
}
