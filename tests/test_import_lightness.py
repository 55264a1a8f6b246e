"""`sftkit --help`, `validate`, `list` and `estimate-memory` must not import the training stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

QLORA = str(Path(__file__).resolve().parent.parent / "recipes" / "r1_gsm8k_qlora.yaml")
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "trl", "datasets", "accelerate")

PROBE = """
import sys
from sftkit.cli import run_cli
code = run_cli(sys.argv[1:])
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["validate", QLORA],
        ["list", "strategies"],
        ["plugins", "--all"],
        ["recipes"],
        ["estimate-memory", QLORA],
    ],
    ids=lambda a: a[0],
)
def test_command_imports_no_training_stack(args):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode in (0, 3), result.stderr
    assert "HEAVY=\n" in result.stdout or result.stdout.rstrip().endswith("HEAVY="), result.stdout


def test_python_dash_m_sftkit_runs_the_cli():
    """`python -m sftkit` is the CLI, for an environment whose scripts are not on PATH."""
    result = subprocess.run(
        [sys.executable, "-m", "sftkit", "validate", QLORA], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "r1_gsm8k_qlora" in result.stdout + result.stderr
