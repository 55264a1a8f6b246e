"""What a person sees: only sftkit's own lines on the terminal (library logging, warnings and
bars go to the run's sftkit.log), a progress display that stays readable at 80 columns, and
progress for the evaluations inside `sftkit run`."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from sftkit.progress import Display
from sftkit.runpaths import RunPaths
from sftkit.testing import FAST_OVERRIDES, quickstart_recipe

ROOT = Path(__file__).resolve().parent.parent

# Every line sftkit prints during a run, by shape. A line that matches none of these came
# from somewhere else (a library's logging, warnings, print or tqdm) and fails the test.
STAGES = r"(prepare data|tokenize|load model|load weights|write shards|train|(before|after) \S+)"
SFTKIT_LINES = tuple(
    re.compile(p)
    for p in (
        r"^data: \d+ train / \d+ dev / \d+ test examples in \S+$",
        r"^data warning: .+$",
        r"^model: \S+ \([\w-]+\), loaded in \d+\.\ds$",
        r"^  [\d,]+ of [\d,]+ parameters train \(\d+\.\d\d%\)$",
        r"^(before|after) training: \S+ \w+ [\d.]+%? .*\(n=\d+, \w+\)$",
        r"^step \d+/\d+  loss \S+( {2}reward \S+)?( {2}lr \S+)?( {2}grad \S+)?( {2}[\d,]+ tok/s)?$",
        r"^report: \S+$",
        # GRPO's loss can be < 0; an objective's headline (grpo's final reward) may follow
        r"^completed: \S+ in \S+( \(train loss -?[\d.]+(, final [\w ]+ -?[\d.]+)*\))?$",
        r"^note: .+$",
        r"^warning: .+$",
        rf"^{STAGES}: .+$",  # plain progress lines of a long stage
    )
)
# One line of the live display: a stage name, then bar, counts, note, times.
LIVE_LINE = re.compile(rf"^{STAGES}\s+[━╸╺╾ ]*\s*(\d+(/\d+)?)?\s*.*\d+:\d\d:\d\d.*$")

# Library output of each kind, from the libraries' own loggers and bars, while the run
# runs: what bitsandbytes (at `import peft`), transformers and datasets really emit.
NOISE_PLUGIN = """
import logging, warnings
from sftkit.hookspecs import hookimpl

class Noise:
    @hookimpl
    def on_train_start(self, run):
        from transformers.utils import logging as hf_logging
        from datasets.utils import logging as ds_logging
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: No module named "
            "'kernels'. Please make sure you already `pip install kernels`")
        hf_logging.get_logger("transformers.trainer_utils").warning(
            "mtime may not be reliable on this filesystem, falling back to numerical ordering")
        ds_logging.get_logger("datasets.arrow_dataset").warning("datasets noise")
        warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)
        for _ in hf_logging.tqdm(range(3), desc="Writing model shards"):
            pass
"""
PROBE = f"""
import sys
{NOISE_PLUGIN}
from sftkit.cli import run_cli
from sftkit.plugins import make_plugin_manager
manager = make_plugin_manager(autoload=False)
manager.register(Noise(), "noise")
sys.exit(run_cli(sys.argv[1:], manager=manager))
"""


def _run_args(run_dir: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(quickstart_recipe()),
        *FAST_OVERRIDES,
        "evaluation.before_training=true",
        "evaluation.after_training=true",
        "evaluation.evaluators.0.options.batch_size=4",
        *extra,
        "--output-dir",
        str(run_dir),
    ]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.pop("SFTKIT_VERBOSE", None)
    # transformers propagates its records from import when CI is set (utils/logging.py):
    # these probes check what a user's terminal and log file get
    env.pop("CI", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["HF_HUB_OFFLINE"] = "1"
    return {**env, **extra}


def _foreign(lines: list[str]) -> list[str]:
    return [line for line in lines if line and not any(p.match(line) for p in SFTKIT_LINES)]


def _assert_noise_logged(run_dir: Path, *, bars_as_stages: bool = True) -> None:
    log = RunPaths(run_dir).log.read_text(encoding="utf-8")
    for noise in (
        "[bitsandbytes.backends.cpu.ops] Failed to load CPU gemm_4bit_forward",
        "[transformers.trainer_utils] mtime may not be reliable",
        "[datasets.arrow_dataset] datasets noise",
        "FutureWarning: `is_gradient_checkpointing` is deprecated",
        *(["[sftkit.progress] write shards: started"] if bars_as_stages else []),
    ):
        assert noise in log, noise


@pytest.mark.slow
def test_quickstart_prints_only_sftkit_lines(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *_run_args(run_dir, "model.trust_remote_code=true")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert _foreign(lines) == [], "\n".join(lines)
    assert sum("trust_remote_code is true" in line for line in lines) == 1  # said once
    assert any(line.startswith("before training: gsm8k") for line in lines)
    assert "Loading weights" not in result.stderr and "Writing model shards" not in result.stderr
    _assert_noise_logged(run_dir)
    # checkpoints/README.md is sftkit's, not TRL's card about a hub model "None".
    readme = (RunPaths(run_dir).checkpoints / "README.md").read_text(encoding="utf-8")
    assert "--resume" in readme and "None" not in readme


def test_verbose_is_taken_from_anywhere_before_the_double_dash(monkeypatch) -> None:
    from sftkit.cli import verbose_option

    monkeypatch.delenv("SFTKIT_VERBOSE", raising=False)
    assert verbose_option(["run", "r.yaml", "--verbose", "a=1"]) == (["run", "r.yaml", "a=1"], True)
    assert verbose_option(["--verbose", "validate", "r"]) == (["validate", "r"], True)
    assert verbose_option(["x", "--", "--verbose"]) == (["x", "--", "--verbose"], False)
    monkeypatch.setenv("SFTKIT_VERBOSE", "1")
    assert verbose_option(["validate", "r"]) == (["validate", "r"], True)


def _read_pty(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(master)
    return process.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def _screen_lines(raw: str) -> list[str]:
    """Every line the terminal showed, once each, without escape sequences."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", raw)
    seen: dict[str, None] = {}
    for chunk in text.replace("\r\n", "\n").split("\n"):
        for line in chunk.split("\r"):
            if line.strip():
                seen.setdefault(line.rstrip(), None)
    return list(seen)


@pytest.mark.slow
def test_run_on_an_80_column_terminal(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rc, raw = _read_pty(
        [sys.executable, "-c", PROBE, *_run_args(run_dir, "strategy.name=lora")],
        _env(COLUMNS="80", LINES="24", TERM="xterm-256color"),
        timeout=300,
    )
    lines = _screen_lines(raw)
    assert rc == 0, "\n".join(lines)
    foreign = [line for line in _foreign(lines) if not LIVE_LINE.match(line)]
    assert foreign == [], "\n".join(lines)
    # The live lines fit the terminal; messages are whole lines (the terminal wraps a long
    # path), and the model's description is two short lines, not one that wraps.
    live = [line for line in lines if LIVE_LINE.match(line)]
    assert live and max(len(line) for line in live) <= 80, "\n".join(live)
    assert all(len(line) <= 80 for line in lines if line.startswith(("model: ", "  ")))
    # The finished bar reads in full: steps, loss, time; nothing cut to "…".
    train = [line for line in lines if line.startswith("train ")]
    assert train and re.match(r"^train\s+━+\s+3/3 loss \d+\.\d{4}\s+\d:\d\d:\d\d", train[-1])
    assert not any("…" in line for line in train)
    # Evaluation inside `sftkit run` shows its progress: examples done, accuracy so far.
    assert any(re.match(r"^before gsm8k\s.*\d+/8 acc \d+\.\d%", line) for line in lines)
    _assert_noise_logged(run_dir)


def test_the_layout_fits_80_columns_with_the_widest_values() -> None:
    """Rendered at 80 columns, every column of the longest stage values is whole."""
    out = io.StringIO()
    display = Display(Console(file=out, width=80, force_terminal=True, color_system=None))
    train = display.open("train", 10000, keep=True)
    train.update(1234, note="loss 12.3456")
    evaluation = display.open("before eval-loss", 1319)
    evaluation.update(100, note="acc 100.0%")
    display.open("load model")
    assert display.progress is not None
    frame = io.StringIO()
    Console(file=frame, width=80, color_system=None).print(
        display.progress.make_tasks_table(display.progress.tasks)
    )
    display.close()
    rows = frame.getvalue().splitlines()
    assert all(len(row) <= 80 for row in rows), rows
    assert re.match(r"^train\s+━*\S*\s+1234/10000 loss 12\.3456\s+\d:\d\d:\d\d", rows[0]), rows
    assert "before eval-loss" in rows[1] and "100/1319 acc 100.0%" in rows[1], rows
    assert rows[2].startswith("load model") and "…" not in "".join(rows)


def test_plain_output_is_one_line_per_interval_never_wrapped() -> None:
    out = io.StringIO()
    console = Console(file=out, width=40, force_terminal=False, color_system=None)
    quick = Display(console)  # default interval: a short stage prints nothing
    with quick.stage("tokenize", 10) as stage:
        stage.update(10)
    assert out.getvalue() == ""
    chatty = Display(console, plain_interval=0)
    with chatty.stage("before gsm8k", 200) as stage:
        stage.update(100, note="acc 45.0%")
    assert re.fullmatch(
        r"before gsm8k: 100/200  acc 45\.0%  0:00:00( {2}eta 0:00:00)?\n", out.getvalue()
    )
    out.truncate(0), out.seek(0)
    chatty.say("model: " + "x" * 60)  # longer than the console: one line all the same
    assert out.getvalue().count("\n") == 1


QUIET_PROBE = """
import logging, sys, warnings
from pathlib import Path
import datasets  # imported before sftkit configures it: adopted as it is
from sftkit import quiet
before = list(logging.getLogger().handlers)
with quiet.quiet_libraries(verbose=sys.argv[2] == "verbose"):
    from transformers.utils import logging as hf_logging  # imported after: errors only ...
    hf_logging.get_logger("transformers.modeling_utils").warning("transformers lost")
    quiet.adopt_loaded()  # ... until adopted (the CLI's display does it at each stage)
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("bnb held")
    hf_logging.get_logger("transformers.modeling_utils").warning("transformers held")
    datasets.utils.logging.get_logger("datasets.load").warning("datasets held")
    warnings.warn("a FutureWarning", FutureWarning)
    assert quiet.hidden_messages() == (0 if sys.argv[2] == "verbose" else 4)
    quiet.log_to(Path(sys.argv[1]))
    hf_logging.get_logger("transformers.trainer").warning("transformers after")
    assert not hf_logging.is_progress_bar_enabled() or sys.argv[2] == "verbose"
# afterwards the process's logging is as it was: no handler, no import hook left behind
assert list(logging.getLogger().handlers) == before, logging.getLogger().handlers
assert not [f for f in sys.meta_path if "sftkit" in type(f).__module__], sys.meta_path
assert hf_logging.get_logger("transformers").propagate is False
print("done", file=sys.stderr)
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_library_records_are_held_then_logged(tmp_path: Path, mode: str) -> None:
    log = tmp_path / "sftkit.log"
    result = subprocess.run(
        [sys.executable, "-c", QUIET_PROBE, str(log), mode],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    text = log.read_text(encoding="utf-8")
    for held in ("bnb held", "transformers held", "datasets held", "FutureWarning", "after"):
        assert held in text, held
    assert "transformers lost" not in text
    if mode == "quiet":
        assert result.stderr == "done\n"
    else:
        assert "[transformers.modeling_utils] WARNING: transformers held" in result.stderr
        assert "[datasets.load] WARNING: datasets held" in result.stderr


def test_nox_does_not_say_uv_is_missing(noxfile) -> None:
    import logging

    nox_logger = logging.getLogger("nox")

    def shown(message: str) -> bool:
        return nox_logger.filter(
            nox_logger.makeRecord("nox", logging.INFO, "", 0, message, (), None)
        )

    assert not shown("uv binary not found.")
    assert shown("Running session tests")


LIBRARY_PROBE = """
import logging, os, sys
mine = logging.StreamHandler(sys.stdout)
logging.getLogger().addHandler(mine)  # the program's own logging
from sftkit.testing import tiny_recipe
from sftkit.training.runner import run_recipe
result = run_recipe(tiny_recipe("output_dir=" + sys.argv[1]))
assert result.status == "completed", result
from transformers.utils import logging as hf_logging
assert logging.getLogger().handlers == [mine], logging.getLogger().handlers
assert hf_logging.get_logger("transformers").handlers, "transformers' own handler is gone"
assert not [v for v in os.environ if v.endswith(("_PROGRESS_BARS", "_VERBOSITY"))]
import warnings
assert warnings.showwarning.__module__ == "warnings"  # not routed into logging
print("left alone")
"""


@pytest.mark.slow
def test_the_library_api_leaves_the_process_logging_alone(tmp_path: Path) -> None:
    """Quiet is the CLI's: a program calling run_recipe keeps its handlers, the libraries
    keep theirs, and no environment switch is set behind its back."""
    result = subprocess.run(
        [sys.executable, "-c", LIBRARY_PROBE, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "left alone" in result.stdout
