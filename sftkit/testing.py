"""Helpers for tests: sftkit's own and plugin authors'.

    from sftkit.testing import registered, quick_run

    def test_my_strategy_is_listed():
        with registered(my_plugin_module) as registry:
            assert "my-strategy" in registry.strategies

    def test_my_strategy_trains(tmp_path):
        run_dir = quick_run(tmp_path, "strategy.name=my-strategy")
        assert (run_dir / "final").is_dir()

With sftkit installed, pytest also gets the fixtures of `sftkit.pytest_plugin`
(`sftkit_registry`, `tiny_recipe`, `tiny_model`, `tiny_dataset`, `quick_run`).
Nothing here imports torch until a helper that trains or builds a model is called.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sftkit.plugins import SftkitPluginManager, make_plugin_manager
from sftkit.registry import Registry

#: The quickstart recipe shrunk to a run of a few seconds on one CPU core: a handful of
#: steps on 64 synthetic problems, no evaluation, one checkpoint at the end.
FAST_OVERRIDES: tuple[str, ...] = (
    "training.max_steps=3",
    "training.micro_batch_size=4",
    "training.logging_steps=1",
    "~training.save_steps",
    "evaluation.before_training=false",
    "evaluation.after_training=false",
    "data.format.options.train_size=64",
    "data.format.options.dev_size=8",
    "data.format.options.test_size=8",
)


def fresh_manager(*, builtins: bool = True, disabled: tuple[str, ...] = ()) -> SftkitPluginManager:
    """A plugin manager with the built-ins and no installed plugins (autoloading off)."""
    return make_plugin_manager(autoload=False, builtins=builtins, disabled=disabled)


def fresh_registry(*, builtins: bool = True) -> Registry:
    return Registry.from_manager(fresh_manager(builtins=builtins))


@contextmanager
def registered(*plugins: Any, builtins: bool = True) -> Iterator[Registry]:
    """Register `plugins` (modules or objects with hookimpls) on a fresh manager for the
    duration of the block and yield its registry. Raises if a plugin fails to register."""
    manager = fresh_manager(builtins=builtins)
    for i, plugin in enumerate(plugins):
        name = getattr(plugin, "__name__", None) or f"test-plugin-{i}"
        if not manager.register(plugin, name):
            raise AssertionError("; ".join(f.describe() for f in manager.failures))
    try:
        yield Registry.from_manager(manager)
    finally:
        for info in list(manager.infos):
            manager.unregister(info)


def quickstart_recipe() -> Path:
    """The bundled quickstart recipe (tiny random-init Llama, synthetic arithmetic, CPU)."""
    from sftkit.recipe.load import find_recipe

    return find_recipe("quickstart")


def tiny_recipe(
    *overrides: str, recipe: str | Path | None = None, registry: Registry | None = None
) -> Any:
    """A `ResolvedRecipe` of the quickstart with FAST_OVERRIDES and yours applied."""
    from sftkit.recipe.load import load_recipe

    return load_recipe(
        str(recipe or quickstart_recipe()),
        [*FAST_OVERRIDES, *overrides],
        registry=registry or fresh_registry(),
    )


def tiny_model(resolved: Any, directory: Path) -> tuple[Any, Any]:
    """(model, tokenizer) for `resolved` with its strategy applied; a random-init base is
    written once under `directory`."""
    from sftkit.modeling import build_model, load_tokenizer

    tokenizer = load_tokenizer(resolved.recipe)
    return build_model(resolved, tokenizer, base_dir=Path(directory) / "base"), tokenizer


def tiny_dataset(resolved: Any, split: str = "train") -> list[Any]:
    """The recipe's examples for `split` (prepared under the recipe's output directory)."""
    from sftkit.data.prepare import load_split

    return load_split(resolved, split)  # type: ignore[arg-type]


def quick_run(
    output_dir: Path,
    *overrides: str,
    recipe: str | Path | None = None,
    cli_args: Sequence[str] = (),
) -> Path:
    """Run `sftkit run` through the real CLI (installed plugins load as for a user) on the
    quickstart with FAST_OVERRIDES and yours; return the run directory. Raises
    AssertionError with the exit code when the run fails."""
    from sftkit.cli import run_cli

    run_dir = Path(output_dir) / "run"
    argv = [
        *cli_args,
        "run",
        str(recipe or quickstart_recipe()),
        *FAST_OVERRIDES,
        *overrides,
        "--output-dir",
        str(run_dir),
    ]
    code = run_cli(argv)
    if code != 0:
        raise AssertionError(f"`sftkit {' '.join(argv)}` exited with {code}")
    return run_dir


def static_bytes_after_one_step(resolved: Any, base_dir: Path) -> tuple[Any, Any]:
    """(predicted, measured) `StaticBytes` of `resolved`'s strategy and optimizer: the
    estimator's weights, trainable, gradient and optimizer-state bytes, and those of the real
    tensors after one optimizer step of the model sftkit builds (on CPU, the tiny model of the
    recipe). A plugin's test asserts ``predicted == measured`` to prove its strategy is priced
    exactly. Imports torch."""
    import torch

    from sftkit.memory.compute import shape_for
    from sftkit.memory.setup import setup_from_recipe
    from sftkit.memory.static import static_bytes
    from sftkit.modeling import build_model
    from sftkit.training.measure import (
        autocast_context,
        measured_static,
        prepare_for_training,
        random_batch,
    )
    from sftkit.training.optimizer import build_optimizer

    torch.manual_seed(0)
    setup = setup_from_recipe(resolved, shape_for(resolved), on_gpu=False)
    model = build_model(resolved, None, base_dir=base_dir)
    optimizer = build_optimizer(resolved, model)
    prepare_for_training(model, setup)
    with autocast_context(setup, "cpu"):
        out = model(**random_batch(setup, "cpu"))
    out.loss.backward()
    optimizer.step()
    return static_bytes(setup), measured_static(model, optimizer)
