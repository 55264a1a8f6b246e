"""The core CLI commands and their exit codes (0 ok, 2 bad input, 1 internal)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sftkit.cli import run_cli

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
QLORA = str(RECIPES / "r1_gsm8k_qlora.yaml")


def test_help_lists_the_commands(capsys):
    assert run_cli(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("validate", "plugins", "list", "recipes"):
        assert command in out


def test_validate_ok(capsys):
    assert run_cli(["validate", QLORA]) == 0
    assert "OK" in capsys.readouterr().out


def test_validate_typo_exits_2_and_suggests(capsys):
    assert run_cli(["validate", QLORA, "strategy.options.rnk=8"]) == 2
    err = capsys.readouterr().err
    assert "strategy.options.rnk" in err and "Did you mean 'rank'" in err


def test_validate_bad_override_exits_2(capsys):
    assert run_cli(["validate", QLORA, "training.micro_batch_size"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_missing_recipe_exits_2(capsys):
    assert run_cli(["validate", "no/such/recipe.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_command_exits_2(capsys):
    assert run_cli(["valdate", QLORA]) == 2


@pytest.mark.parametrize("kind", ["strategies", "optimizers", "formats", "templates", "evaluators"])
def test_list(kind, capsys):
    assert run_cli(["list", kind]) == 0
    assert "builtin." in capsys.readouterr().out


def test_plugins_all_lists_builtins(capsys):
    assert run_cli(["plugins", "--all"]) == 0
    out = capsys.readouterr().out
    assert "builtin.strategies" in out and "qlora-nf4" in out


def test_recipes_lists_bundled(capsys):
    assert run_cli(["recipes"]) == 0
    assert "r1_gsm8k_qlora" in capsys.readouterr().out


def test_disable_plugin_option(capsys):
    assert run_cli(["--disable-plugin", "builtin.optimizers", "validate", QLORA]) == 2
    assert "paged-adamw-8bit" in capsys.readouterr().err


def test_internal_errors_exit_1(monkeypatch, capsys):
    import sftkit.recipe.load as load

    def explode(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr("sftkit.cli.core.load_recipe", explode)
    assert load is not None
    assert run_cli(["validate", QLORA]) == 1
    assert "internal error" in capsys.readouterr().err


def test_broken_third_party_plugin_does_not_take_down_the_cli(tmp_path):
    """A plugin whose import fails is reported by name; other commands still run."""
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sftkit]\nbroken = broken_plugin_mod:plugin\n")
    (tmp_path / "broken_plugin_mod.py").write_text("import does_not_exist\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    code = "from sftkit.cli import main; main()"
    validate = subprocess.run(
        [sys.executable, "-c", code, "validate", QLORA], capture_output=True, text=True, env=env
    )
    assert validate.returncode == 0, validate.stderr
    plugins = subprocess.run(
        [sys.executable, "-c", code, "plugins"], capture_output=True, text=True, env=env
    )
    assert plugins.returncode == 0
    text = " ".join(plugins.stdout.split())
    assert "broken" in text and "broken-plugin" in text and "does_not_exist" in text
    assert "--disable-plugin" in text
    disabled = subprocess.run(
        [sys.executable, "-c", code, "--disable-plugin", "broken", "plugins"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "does_not_exist" not in disabled.stdout


def test_plugin_command_is_added_and_a_raising_one_is_reported(tmp_path):
    (tmp_path / "cmd_plugin.py").write_text(
        textwrap.dedent(
            """
            import click
            from sftkit.hookspecs import hookimpl

            @click.command()
            def hello():
                "Say hello."
                click.echo("hello from a plugin")

            @hookimpl
            def register_commands(cli):
                cli.add_command(hello)
            """
        )
    )
    (tmp_path / "bad_cmd_plugin.py").write_text(
        "from sftkit.hookspecs import hookimpl\n"
        "@hookimpl\ndef register_commands(cli):\n    raise ValueError('nope')\n"
    )
    for name, module in (("cmd", "cmd_plugin"), ("badcmd", "bad_cmd_plugin")):
        dist = tmp_path / f"{module}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[sftkit]\n{name} = {module}\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-c", "from sftkit.cli import main; main()", "hello"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0 and "hello from a plugin" in run.stdout
    plugins = subprocess.run(
        [sys.executable, "-c", "from sftkit.cli import main; main()", "plugins"],
        capture_output=True,
        text=True,
        env=env,
    )
    text = " ".join(plugins.stdout.split())
    assert "command hello" in text and "badcmd" in text and "nope" in text
