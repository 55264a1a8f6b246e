"""The ``grpo`` objective (TRL's `GRPOTrainer`): its data, its config and its trainer.

- data (`grpo_dataset`): each prepared example's prompt as the recipe's template renders it,
  and its ``reference_answer``, which TRL hands the reward functions as a column. The
  examples' completions are not trained on: the policy writes its own.
- config (`SftkitGrpoConfig`): `GRPOConfig` given the arguments sftkit builds for a run and
  the objective's options (``num_generations``, ``max_completion_length``, ``temperature``,
  ``beta``, ``rewards``: the reward components by name, with their weights).
- trainer (`SftkitGrpoTrainer`): `GRPOTrainer` with the run's collaborators
  (`RunTrainerMixin`), the reward components loaded from the run's registry. Generation is
  the trainer's default backend (transformers' ``generate``). With adapters and ``beta > 0``
  TRL keeps the reference as a frozen copy of the adapters (``ref``) on the same base
  weights, so no second model (full training with ``beta > 0`` is refused at load).
  With ``use_vllm`` TRL's vLLM colocate mode generates instead, in the share of the GPU
  ``vllm_gpu_memory_utilization`` reserves, its context bounded to prompt + completion.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from trl import GRPOConfig, GRPOTrainer

from sftkit import compat
from sftkit.errors import MissingDependencyError
from sftkit.specs import load_factory
from sftkit.training.reference import ReferenceAdapterNotFinal
from sftkit.training.trainer import RunTrainerMixin


def grpo_dataset(split: Any, template: Any, tokenizer: Any, recipe: Any) -> Any:
    """The split's prompts as texts, with each example's reference answer (TRL's layout:
    ``prompt`` and the columns the rewards read)."""
    from datasets import Dataset

    bos = getattr(tokenizer, "bos_token", None) or ""
    # TRL tokenizes a text prompt with the tokenizer's special tokens: drop the template's
    # BOS where the tokenizer adds its own, so the prompt starts with one, as in SFT.
    strip_bos = bool(bos) and _adds_bos(tokenizer)
    rows = []
    for example in split:
        prompt = template.prompt_text(example, tokenizer)
        if strip_bos and prompt.startswith(bos):
            prompt = prompt[len(bos) :]
        rows.append({"prompt": prompt, "reference_answer": example.reference_answer})
    return Dataset.from_list(rows)


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == getattr(tokenizer, "bos_token_id", None)


@dataclasses.dataclass
class SftkitGrpoConfig(GRPOConfig):
    """`GRPOConfig` taking every argument sftkit builds for a run. ``rewards`` names the
    reward components with their weights (`GrpoOptions`); their weights become TRL's
    ``reward_weights``. SFT's data shaping does not apply (the policy writes the
    completions; prompts are not tokenized ahead): these are taken and left unused."""

    rewards: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    packing: bool = False
    packing_strategy: str = "bfd"
    completion_only_loss: bool | None = None
    max_length: int | None = None
    dataset_num_proc: int | None = None
    # GRPOConfig's, with its default, typed here: set in __post_init__ when use_vllm
    vllm_max_model_length: int | None = None

    def __post_init__(self) -> None:
        if self.rewards:
            self.reward_weights = [float(reward["weight"]) for reward in self.rewards]
        if self.use_vllm:
            _require_vllm()
            self.vllm_mode = "colocate"  # the mode the estimate prices (a share of each GPU)
            # vLLM's default is the model's whole context, whose KV cache it must hold for
            # one sequence at start (16 GiB at 128K for Llama-3.1-8B): a rollout never
            # grows past the prompt bound and the completion
            if self.vllm_max_model_length is None and self.max_length is not None:
                completion = self.max_completion_length or 0
                self.vllm_max_model_length = self.max_length + completion
        super().__post_init__()


def _require_vllm() -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise MissingDependencyError(
            "vllm",
            "training.objective_options.use_vllm",
            hint="Install the vllm release TRL supports (pip install vllm), or set "
            "use_vllm: false (transformers' generate).",
        )


class SftkitGrpoTrainer(
    ReferenceAdapterNotFinal, RunTrainerMixin, compat.WeightsOnlyRestart, GRPOTrainer
):
    """TRL's GRPOTrainer running a sftkit recipe (the ``grpo`` objective)."""

    def __init__(self, *, model: Any, args: SftkitGrpoConfig, parts: Any, **kwargs: Any) -> None:
        catalog = parts.registry.rewards
        functions = []
        for reward in args.rewards:
            function = load_factory(catalog.get(reward["name"]).factory)
            # TRL logs each reward under its function's __name__: use the component's name
            functions.append(_named(function, reward["name"]))
        super().__init__(model=model, args=args, parts=parts, reward_funcs=functions, **kwargs)


def _named(function: Any, name: str) -> Any:
    def reward(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    reward.__name__ = name
    return reward
