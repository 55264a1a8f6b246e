"""What a run trains under besides its recipe: the precision on this device, and the
environment variables that change training. Checked before anything is written.

- ``training.precision=fp16`` on the CPU is refused: accelerate enables fp16 autocast and
  loss scaling only on an accelerator, so on the CPU the run would train in fp32 under an
  fp16 label (transformers used to refuse it too: "fp16 ... can only be used on CUDA").
  bf16 autocast does run on the CPU.
- Variables that accelerate and transformers read as settings (``ACCELERATE_*``), and the
  ones that pick the GPUs or change CUDA's arithmetic, are recorded in run.json
  (``environment_variables``) and said at start. The ones that contradict the recipe (a
  mixed precision other than training.precision, the CPU for a GPU run, another number of
  accumulation steps) are refused: they would change every loss while recipe.yaml says
  otherwise. A resume in a different environment is said, variable by variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sftkit.devices import is_cpu
from sftkit.errors import SftkitError
from sftkit.runpaths import RunPaths
from sftkit.training.resume import read_json_safely

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

PREFIXES = ("ACCELERATE_",)
NAMES = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_TF32_OVERRIDE",  # TF32 matmuls on or off, whatever torch was told
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "CUBLAS_WORKSPACE_CONFIG",  # deterministic cuBLAS
)
# training.precision -> what accelerate calls it (ACCELERATE_MIXED_PRECISION).
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
TRUE = ("1", "true", "yes")


def training_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables that change training, as this process has them."""
    environ = os.environ if environ is None else environ
    return {
        name: value
        for name, value in sorted(environ.items())
        if name.startswith(PREFIXES) or name in NAMES
    }


def check_conditions(
    resolved: ResolvedRecipe,
    device: str,
    resumed: RunPaths | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Raise `SftkitError` for a precision the device cannot give, or an environment
    variable that contradicts the recipe; else the lines to say at start: the variables in
    effect and, for a resume of the run in `resumed`, those that differ from its run.json."""
    recipe = resolved.recipe
    precision = recipe.training.precision
    if precision == "fp16" and is_cpu(device):
        raise SftkitError(
            f"{resolved.source}: training.precision is fp16, but this run trains on the CPU, "
            "where fp16 mixed precision does not exist (no fp16 autocast or loss scaling): "
            "it would silently train in fp32.",
            hint="Use training.precision=fp32 (or bf16, which the CPU runs with autocast), or "
            "train on a CUDA GPU.",
        )
    variables = training_variables(environ)
    wrong: list[str] = []
    mixed = variables.get("ACCELERATE_MIXED_PRECISION")
    if mixed is not None and mixed.lower() != MIXED_PRECISION[precision]:
        wrong.append(
            f"ACCELERATE_MIXED_PRECISION={mixed} would train in {mixed}, but "
            f"training.precision is {precision}"
        )
    if variables.get("ACCELERATE_USE_CPU", "").lower() in TRUE and not is_cpu(device):
        wrong.append(
            f"ACCELERATE_USE_CPU={variables['ACCELERATE_USE_CPU']} would train on "
            f"the CPU, but this run trains on {device}"
        )
    steps = variables.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    wanted = recipe.training.gradient_accumulation_steps
    if steps is not None and steps.strip() != str(wanted):
        wrong.append(
            f"ACCELERATE_GRADIENT_ACCUMULATION_STEPS={steps}, but "
            f"training.gradient_accumulation_steps is {wanted}"
        )
    if wrong:
        names = " ".join(item.split("=", 1)[0] for item in wrong)
        raise SftkitError(
            "the environment contradicts the recipe: " + "; ".join(wrong) + ".",
            hint=f"Unset it for this run (`env -u {names.replace(' ', ' -u ')} sftkit ...`); "
            "the recipe is where a run's settings live (training.precision, ...).",
        )
    lines = []
    if variables:
        shown = ", ".join(f"{name}={value}" for name, value in variables.items())
        lines.append(f"environment: {shown} (recorded in run.json).")
    recorded = read_json_safely(resumed).get("environment_variables") if resumed else None
    if isinstance(recorded, dict):
        before = {str(k): str(v) for k, v in recorded.items()}
        changed = [
            f"{name} {before.get(name, '(unset)')} -> {variables.get(name, '(unset)')}"
            for name in sorted(set(before) | set(variables))
            if before.get(name) != variables.get(name)
        ]
        if changed:
            lines.append(
                "note: the environment differs from the run's last start: "
                + ", ".join(changed)
                + "."
            )
    return lines
