"""``training.trainer_args``: TRL's `SFTConfig` options passed through unchanged, checked
without importing torch.

The names `SFTConfig` takes come from ``trl_fields.json``, generated from the installed TRL
(``python -m sftkit.recipe.trainer_args`` rewrites it; a test keeps it equal to the installed
TRL's). When another TRL version is installed, names the list does not know are passed on,
not refused: TRL itself rejects a wrong one when the trainer is built (`unknown_names`), and
validation says so in a note. Names sftkit sets from the recipe are refused (`OWNED`), with
the key to set instead, so the estimate always prices the run that trains.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from sftkit import versions
from sftkit.errors import Problem
from sftkit.suggest import did_you_mean

FIELDS_FILE = Path(__file__).with_name("trl_fields.json")
KEY = "training.trainer_args"

# SFTConfig fields sftkit sets itself -> what to set instead. `trainer_config_kwargs` may
# produce no other name (a test builds it for several recipes and checks).
_OPTIMIZER = "optimizer.name and optimizer.options (the optimizer is sftkit's)"
_EVAL = "training.eval_steps and training.early_stopping"
_CHECKPOINTING = "training.gradient_checkpointing"
OWNED: dict[str, str] = {
    "output_dir": "output_dir (or --output-dir)",
    "per_device_train_batch_size": "training.micro_batch_size",
    "per_device_eval_batch_size": "training.micro_batch_size",
    "auto_find_batch_size": "training.micro_batch_size (sftkit estimate-memory says what fits)",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "num_train_epochs": "training.epochs",
    "max_steps": "training.max_steps",
    "learning_rate": "optimizer.options.lr",
    "optim": _OPTIMIZER,
    "optim_args": _OPTIMIZER,
    "optim_target_modules": _OPTIMIZER,
    "weight_decay": _OPTIMIZER,
    "adam_beta1": _OPTIMIZER,
    "adam_beta2": _OPTIMIZER,
    "adam_epsilon": _OPTIMIZER,
    "lr_scheduler_type": "training.lr_scheduler",
    "warmup_steps": "training.warmup_ratio",
    "max_grad_norm": "training.max_grad_norm",
    "seed": "training.seed",
    "data_seed": "training.seed",
    "bf16": "training.precision",
    "fp16": "training.precision",
    "use_cpu": "hardware.gpu=cpu",
    "gradient_checkpointing": _CHECKPOINTING,
    "gradient_checkpointing_kwargs": _CHECKPOINTING,
    "activation_checkpointing": _CHECKPOINTING,
    "activation_checkpointing_kwargs": _CHECKPOINTING,
    "activation_offloading": "training.activation_offload",
    "use_liger_kernel": "training.liger_kernels",
    "liger_kernel_config": "training.liger_kernels",
    "logging_steps": "training.logging_steps",
    "logging_first_step": "training.logging_steps (sftkit always logs the first step)",
    "logging_nan_inf_filter": "training.logging_steps (sftkit shows a NaN loss, never hides it)",
    "disable_tqdm": "--verbose (sftkit draws its own progress)",
    "report_to": "training.report_to",
    "save_strategy": "training.save_steps",
    "save_steps": "training.save_steps",
    "save_total_limit": "training.save_total_limit",
    "save_only_model": "nothing: sftkit's checkpoints keep the optimizer state for exact resume",
    "ignore_data_skip": "nothing: an exact resume skips the batches already trained",
    "resume_from_checkpoint": "sftkit run --resume",
    "eval_strategy": _EVAL,
    "eval_steps": _EVAL,
    "prediction_loss_only": _EVAL,
    "metric_for_best_model": "training.early_stopping.metric",
    "greater_is_better": "training.early_stopping.mode",
    "load_best_model_at_end": "training.early_stopping",
    "max_length": "training.max_seq_length",
    "packing": "data.packing",
    "packing_strategy": "data.packing (sftkit packs best-fit)",
    "padding_free": "data.packing (sftkit packs padding-free where attention allows it)",
    "torch_compile": "training.compile (each decoder layer, as the estimate prices it)",
    "torch_compile_backend": "training.compile",
    "torch_compile_mode": "training.compile",
    "completion_only_loss": "data.completion_only_loss",
    "neftune_noise_alpha": "training.neftune_noise_alpha",
    "model_init_kwargs": "model.dtype and model.attn_implementation (sftkit loads the model)",
    "trust_remote_code": "model.trust_remote_code",
    "local_rank": "sftkit launch --nproc",
    "ddp_backend": "distributed.backend",
    "ddp_find_unused_parameters": "distributed.engine (sftkit trains every parameter)",
    "fsdp": "distributed.engine=fsdp",
    "fsdp_config": "distributed.fsdp",
    "deepspeed": "distributed.engine=deepspeed and distributed.deepspeed",
}


LISTED_CONFIG = "trl:SFTConfig"  # the config class the list describes (an objective's `config`)


@cache
def known_fields() -> tuple[str, frozenset[str]]:
    """(the TRL version the list was generated from, `SFTConfig`'s init field names)."""
    data = json.loads(FIELDS_FILE.read_text(encoding="utf-8"))
    return str(data["trl"]), frozenset(data["fields"])


def installed_trl() -> str | None:
    return versions.installed("trl")


def trainer_args_problems(
    args: dict[str, Any], config: str = LISTED_CONFIG
) -> tuple[list[Problem], list[str]]:
    """(problems, notes) of a recipe's ``training.trainer_args``: names sftkit owns and,
    where the list describes the objective's `config` on the installed TRL, names it does
    not have (otherwise the config class checks them when the trainer is built)."""
    listed_for, fields = known_fields()
    installed = installed_trl()
    exact = installed == listed_for and config == LISTED_CONFIG
    problems: list[Problem] = []
    unchecked: list[str] = []
    for name in args:
        path = f"{KEY}.{name}"
        if name in OWNED:
            problems.append(
                Problem(path, f"sftkit sets {name} from the recipe; set {OWNED[name]} instead.")
            )
        elif name not in fields:
            if exact:
                problems.append(
                    Problem(
                        path,
                        f"TRL {installed}'s SFTConfig has no option {name!r}.",
                        did_you_mean(name, fields - OWNED.keys()),
                    )
                )
            else:
                unchecked.append(name)
    notes = []
    if unchecked and config != LISTED_CONFIG:
        notes.append(
            f"{KEY}: {', '.join(unchecked)} not in SFTConfig; the objective's {config} checks "
            "them when the trainer is built."
        )
    elif unchecked:
        notes.append(
            f"{KEY}: {', '.join(unchecked)} not in TRL {listed_for}'s SFTConfig, the version "
            f"sftkit lists; TRL {installed or '(not installed)'} is installed, so TRL checks "
            "them when the trainer is built."
        )
    return problems, notes


def unknown_names(config_class: Any, args: dict[str, Any]) -> list[Problem]:
    """Names of `args` the installed TRL's config class does not take (the check at build
    time, for names the list could not settle)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    return [
        Problem(
            f"{KEY}.{name}",
            f"TRL {installed_trl()}'s {config_class.__name__} has no option {name!r}.",
            did_you_mean(name, fields - OWNED.keys()),
        )
        for name in args
        if name not in fields
    ]


def generate() -> dict[str, Any]:
    """The field list of the installed TRL's `SFTConfig` (imports TRL, and so torch)."""
    import dataclasses

    from trl import SFTConfig

    fields = sorted(f.name for f in dataclasses.fields(SFTConfig) if f.init)
    return {"trl": installed_trl(), "fields": fields}


if __name__ == "__main__":  # python -m sftkit.recipe.trainer_args: regenerate the list
    FIELDS_FILE.write_text(json.dumps(generate(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {FIELDS_FILE} for TRL {installed_trl()}")
