"""Helpers for tests: sftkit's own and plugin authors' (docs/writing-a-plugin.md, "The test
kit", documents each).

    from sftkit.testing import invoke_cli, quick_run, registered

    def test_my_strategy_is_listed():
        with registered(my_plugin_module) as registry:
            assert "my-strategy" in registry.strategies

    def test_my_command(tmp_path):
        result = invoke_cli("my-command", "quickstart", plugins=[my_plugin_module])
        assert result.exit_code == 0, result.stderr

    def test_my_strategy_trains(tmp_path):
        run_dir = quick_run(tmp_path, "strategy.name=my-strategy", plugins=[my_plugin_module])
        assert (run_dir / "final").is_dir()

With sftkit installed, pytest also gets the fixtures of `sftkit.pytest_plugin`
(`sftkit_registry`, `tiny_recipe`, `tiny_model`, `tiny_dataset`, `quick_run`).
Nothing here imports torch until a helper that trains or builds a model is called.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
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
    """The built-ins' registry; like `registered`, it raises on a broken plugin."""
    return Registry.from_manager(fresh_manager(builtins=builtins), strict=True)


def register_all(manager: SftkitPluginManager, plugins: Sequence[Any]) -> None:
    """Register each plugin under its ``__name__`` (a module's dotted name) or
    ``test-plugin-N``; raise AssertionError with the failure when one is rejected."""
    for i, plugin in enumerate(plugins):
        name = getattr(plugin, "__name__", None) or f"test-plugin-{i}"
        if not manager.register(plugin, name):
            raise AssertionError("; ".join(f.describe() for f in manager.failures))


@contextmanager
def registered(*plugins: Any, builtins: bool = True) -> Iterator[Registry]:
    """Register `plugins` (modules or objects with hookimpls) on a fresh manager for the
    duration of the block and yield its registry. Strict, unlike the command line: a plugin
    that is rejected, whose registration raises, or that registers a name another
    third-party plugin has raises here, so a plugin's own test fails at the cause (a
    built-in's name it takes shadows the built-in: `Catalog.shadowed`)."""
    manager = fresh_manager(builtins=builtins)
    register_all(manager, plugins)
    try:
        yield Registry.from_manager(manager, strict=True)
    finally:
        for info in list(manager.infos):
            manager.unregister(info)


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def invoke_cli(*args: str, plugins: Sequence[Any] = (), builtins: bool = True) -> CliResult:
    """Run ``sftkit ARGS`` in-process as a user would, with the built-ins and `plugins`
    (registered as by `registered`; installed plugins are not autoloaded) and the global
    options in `args` (``--disable-plugin``, ``--trace-plugins``) applied. Returns the exit
    code and what was printed; errors become exit codes exactly as on the command line."""
    from sftkit.cli import run_cli

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        manager = _cli_manager(args, plugins, builtins=builtins, autoload=False)
        code = run_cli(list(args), manager=manager)
    return CliResult(code, out.getvalue(), err.getvalue())


def _cli_manager(
    args: Sequence[str], plugins: Sequence[Any], *, builtins: bool, autoload: bool | None
) -> SftkitPluginManager:
    """The manager `sftkit ARGS` would build, plus `plugins` (those not already loaded from
    an entry point, and not disabled in `args`)."""
    from sftkit.cli import plugin_options

    disabled, from_args, trace = plugin_options(list(args))
    manager = make_plugin_manager(
        autoload=autoload if from_args is None else from_args,
        builtins=builtins,
        disabled=disabled,
        trace=trace,
    )
    wanted = [
        plugin
        for plugin in plugins
        if getattr(plugin, "__name__", None) not in disabled
        and not manager.pm.is_registered(plugin)
    ]
    register_all(manager, wanted)
    return manager


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
    plugins: Sequence[Any] = (),
) -> Path:
    """Run `sftkit run` through the real CLI (installed plugins load as for a user, and
    `plugins` are added to them, so a plugin's test passes before it is installed) on the
    quickstart with FAST_OVERRIDES and yours; return the run directory, a new one under
    `output_dir` at each call (``run``, ``run-2``, ...; `--resume` in `cli_args` continues
    the last one). Raises AssertionError with the exit code when the run fails."""
    from sftkit.cli import run_cli

    run_dir = _run_dir(Path(output_dir), resume="--resume" in cli_args)
    # `run`'s own flags follow the command; the rest (--disable-plugin ...) precede it
    flags = [a for a in cli_args if a in ("--resume", "--weights-only", "--force")]
    argv = [
        *(a for a in cli_args if a not in flags),
        "run",
        str(recipe or quickstart_recipe()),
        *FAST_OVERRIDES,
        *overrides,
        "--output-dir",
        str(run_dir),
        *flags,
    ]
    manager = _cli_manager(argv, plugins, builtins=True, autoload=None) if plugins else None
    code = run_cli(argv, manager=manager)
    if code != 0:
        raise AssertionError(f"`sftkit {' '.join(argv)}` exited with {code}")
    return run_dir


def _run_dir(root: Path, *, resume: bool) -> Path:
    last, n = None, 1
    while (path := root / ("run" if n == 1 else f"run-{n}")).exists():
        last, n = path, n + 1
    return last if resume and last is not None else path


def static_bytes_after_one_step(resolved: Any, base_dir: Path) -> tuple[Any, Any]:
    """(predicted, measured) `StaticBytes` of `resolved`'s strategy and optimizer: the
    estimator's weights, trainable, gradient and optimizer-state bytes, and those of the real
    tensors after one optimizer step of the model sftkit builds (on CPU, the tiny model of the
    recipe). A plugin's test asserts ``predicted == measured`` to prove its strategy is priced
    exactly. Imports torch."""
    import torch

    from sftkit.memory.estimator import shape_for
    from sftkit.memory.phases import static_bytes
    from sftkit.memory.setup import setup_from_recipe
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
