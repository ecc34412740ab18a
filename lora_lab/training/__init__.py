"""Training: one loop (:mod:`~lora_lab.training.loop`) with pluggable objectives.

- :mod:`~lora_lab.training.loop`: ``run_loop`` and the ``Objective`` interface
- :mod:`~lora_lab.training.objectives`: supervised (masked NLL) and language-model objectives
- :mod:`~lora_lab.training.evaluation`: masked NLL, eval-mode guard, loss and accuracy
- :mod:`~lora_lab.training.methods`: ``FullFT`` / ``LoraConfig`` as methods, their labels
- :mod:`~lora_lab.training.sft`: ``train()``, the fine-tuning entry point, and ``RunResult``
- :mod:`~lora_lab.training.pretrain`: ``pretrain()`` and the shipped bases (``load_base``)
- :mod:`~lora_lab.training.bits`: bits of a dataset a model has stored
- :mod:`~lora_lab.training.optim`: AdamW settings and LR schedules, in one place
- :mod:`~lora_lab.training.settings`: the settings objects every trainer and run spec share
  (``OptimSettings``, ``EvalSettings``, ``RLSettings``, ``DPOSettings``)
- :mod:`~lora_lab.training.rl` / :mod:`~lora_lab.training.dpo`: ``train_rl()``, ``train_dpo()``
"""

from lora_lab.training.bits import bits_stored, sample_bits_metric
from lora_lab.training.evaluation import evaluate_loss, evaluating, masked_nll, sampled_accuracy
from lora_lab.training.loop import LoopResult, MicroBatch, Objective, resolve_device, run_loop
from lora_lab.training.methods import (
    FullFT,
    Method,
    apply_method,
    as_method,
    label_sort_key,
    method_label,
    sort_labels,
)
from lora_lab.training.objectives import LanguageModelObjective, SupervisedObjective
from lora_lab.training.pretrain import available_bases, load_base, pretrain
from lora_lab.training.settings import DPOSettings, EvalSettings, OptimSettings, RLSettings
from lora_lab.training.sft import RunResult, log_spaced_steps, train, train_with

__all__ = [
    "DPOSettings",
    "EvalSettings",
    "FullFT",
    "LanguageModelObjective",
    "LoopResult",
    "OptimSettings",
    "RLSettings",
    "Method",
    "MicroBatch",
    "Objective",
    "RunResult",
    "SupervisedObjective",
    "apply_method",
    "as_method",
    "available_bases",
    "bits_stored",
    "evaluate_loss",
    "evaluating",
    "label_sort_key",
    "load_base",
    "log_spaced_steps",
    "masked_nll",
    "method_label",
    "pretrain",
    "resolve_device",
    "train_with",
    "run_loop",
    "sampled_accuracy",
    "sample_bits_metric",
    "sort_labels",
    "train",
]
