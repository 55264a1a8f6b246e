"""Every error a user can cause or meet is exit 2 with what happened, where and what to do;
exit 1 is left for bugs. One test (or a few) per class: a missing package, the file system
(full, read-only, permission denied, a path through a file), undecodable data, bad values,
and the small cases of issue 16."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sftkit.errors import EXIT_BAD_INPUT, EXIT_INTERNAL
from sftkit.testing import FAST_OVERRIDES, invoke_cli, quickstart_recipe

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = str(quickstart_recipe())


def _run(tmp_path: Path, *extra: str, output: Path | None = None):
    out = output or tmp_path / "run"
    return invoke_cli("run", QUICKSTART, *FAST_OVERRIDES, *extra, "--output-dir", str(out))


# --------------------------------------------------------------------------- missing packages

LIGHT_CORE = """
import importlib.abc, sys
HEAVY = {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes",
         "safetensors", "tokenizers", "matplotlib", "tensorboard"}

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NotInstalled())
from sftkit.cli import run_cli
sys.exit(run_cli(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("args", "package"),
    [
        (["run", QUICKSTART], "torch"),
        (["preview", QUICKSTART], "transformers"),
        (["eval", QUICKSTART], "torch"),
        # A command that imports the stack without checking first: caught on the way out.
        (["estimate-memory", QUICKSTART, "--measure"], "torch"),
    ],
    ids=lambda a: a[0] if isinstance(a, list) else a,
)
def test_the_light_core_says_what_to_install(tmp_path: Path, args: list[str], package: str):
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    result = subprocess.run(
        [sys.executable, "-c", LIGHT_CORE, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert f"'{package}'" in result.stderr and "not installed" in result.stderr
    assert "pip install torch --index-url" in result.stderr  # the CPU build, first
    assert "bug" not in result.stderr


def test_the_light_core_still_validates(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LIGHT_CORE, "validate", QUICKSTART],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- the file system


def test_no_space_left_names_the_run_directory(tmp_path: Path, monkeypatch) -> None:
    def full(path: Path, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # a write: no file name

    monkeypatch.setattr("sftkit.training.stages.claim.write_json", full)
    result = _run(tmp_path)
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert f"no space left on the device holding {tmp_path / 'run'}" in result.stderr
    assert "df -h" in result.stderr and "bug" not in result.stderr


@pytest.mark.parametrize(
    "error",
    [
        # safetensors writing a checkpoint on a full disk
        RuntimeError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
            'message: "No space left on device" })'
        ),
        # an OSError the library wrapped
        ValueError("could not save the model"),
    ],
    ids=["safetensors", "wrapped"],
)
def test_a_full_disk_behind_a_library_error_is_still_exit_2(tmp_path, monkeypatch, error):
    def full(path: Path, data: object) -> None:
        if isinstance(error, ValueError):
            try:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            except OSError as cause:
                raise error from cause
        raise error

    monkeypatch.setattr("sftkit.training.stages.claim.write_json", full)
    result = _run(tmp_path)
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert "no space left on the device" in result.stderr


@pytest.mark.parametrize(
    ("code", "message", "said"),
    [
        (errno.EROFS, "Read-only file system", "is on a read-only file system"),
        (errno.EACCES, "Permission denied", "permission denied"),
    ],
    ids=["read-only", "permission-denied"],
)
def test_a_refused_write_is_exit_2_with_the_file(tmp_path, monkeypatch, code, message, said):
    def refused(path: Path, data: object) -> None:
        raise OSError(code, message, str(path))

    monkeypatch.setattr("sftkit.training.stages.claim.write_json", refused)
    result = _run(tmp_path)
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert said in result.stderr and str(tmp_path / "run" / "memory.json") in result.stderr
    assert "output directory" in result.stderr  # what to do: write elsewhere


@pytest.mark.parametrize(
    ("readonly", "said"),
    [(True, "is on a read-only file system"), (False, "permission denied")],
    ids=["read-only", "not-writable"],
)
def test_an_unwritable_output_directory_is_found_before_any_work(
    tmp_path, monkeypatch, readonly, said
):
    # Checked up front (os.access, statvfs); root passes os.access anywhere, so it is faked.
    monkeypatch.setattr("sftkit.oserrors.os.access", lambda path, mode: False)
    flags = os.ST_RDONLY if readonly else 0
    monkeypatch.setattr("sftkit.oserrors.os.statvfs", lambda path: SimpleNamespace(f_flag=flags))
    result = _run(tmp_path, output=tmp_path / "new" / "run")
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert f"output directory {tmp_path / 'new' / 'run'}" in result.stderr and said in result.stderr
    assert not (tmp_path / "new").exists()


def test_a_run_directory_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    result = _run(tmp_path, output=tmp_path / "notes.txt" / "run")
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert f"{tmp_path / 'notes.txt'} is a file, not a directory" in result.stderr


def test_prepared_data_under_a_file(tmp_path: Path) -> None:
    # No check before this one: the OS error itself becomes the message.
    (tmp_path / "notes.txt").write_text("x")
    result = invoke_cli(
        "prepare-data", QUICKSTART, *FAST_OVERRIDES, "--output", str(tmp_path / "notes.txt" / "d")
    )
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert f"{tmp_path / 'notes.txt'} is a file, not a directory" in result.stderr


def test_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "passwd").write_text("root:x:0:0")
    result = _run(tmp_path, output=elsewhere)
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert f"output directory {elsewhere} is not empty (passwd)" in result.stderr
    assert "not a run directory" in result.stderr and "already holds a run" not in result.stderr


# --------------------------------------------------------------------------- undecodable data


def _prompt_completion(tmp_path: Path, train_file: Path, *extra: str):
    return invoke_cli(
        "prepare-data",
        QUICKSTART,
        "data.format.name=prompt-completion",
        f"data.format.options.train_file={train_file}",
        "data.format.options.dev_size=1",
        *extra,
        "--output",
        str(tmp_path / "prepared"),
    )


def test_a_data_file_that_is_not_utf8_names_file_line_and_byte(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    good = b'{"prompt": "2+2?", "completion": "#### 4"}\n'
    bad = '{"prompt": "caf\u00e9?", "completion": "#### 1"}\n'.encode("latin-1")
    train.write_bytes(good + good + bad + good)
    result = _prompt_completion(tmp_path, train)
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    column = bad.index(b"\xe9") + 1
    offset = 2 * len(good) + column - 1
    assert (
        f"{train}:3: not UTF-8 text (byte 0xe9 at column {column}, byte {offset}" in result.stderr
    )
    assert "save the file as UTF-8" in result.stderr


def test_a_recipe_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(Path(QUICKSTART).read_bytes() + b"# caf\xe9\n")
    lines = recipe.read_bytes().count(b"\n")
    result = invoke_cli("validate", str(recipe))
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert f"{recipe}:{lines}: the recipe is not UTF-8 text" in result.stderr


def test_a_directory_as_the_train_file_is_read_as_a_dataset_directory(tmp_path: Path) -> None:
    """A directory is a dataset (its train.jsonl is the train split), as datasets reads one;
    the message is about the data it holds, never "does not exist"."""
    folder = tmp_path / "gsm"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"prompt": "1+1?", "completion": "#### 2"}\n')
    result = _prompt_completion(tmp_path, folder)
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert "does not exist" not in result.stderr
    assert "dev_size=1 leaves no training rows: the source has 1" in result.stderr


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_out_of_range_is_a_recipe_problem(seed: str) -> None:
    result = invoke_cli("validate", QUICKSTART, f"training.seed={seed}")
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert "training.seed" in result.stderr and "bug" not in result.stderr


def test_a_zero_gpu_size_is_bad_input_not_does_not_fit() -> None:
    result = invoke_cli("estimate-memory", QUICKSTART, "--gpu", "0GB")
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert "'0GB'" in result.stderr and "--gpu" in result.stderr


def test_switching_the_format_drops_the_old_formats_options(tmp_path: Path) -> None:
    result = invoke_cli("validate", QUICKSTART, "data.format.name=gsm8k")
    assert result.exit_code == 0, result.stderr
    assert "note: data.format.name=gsm8k: dropped the recipe's options for" in result.stderr
    assert "synthetic-arithmetic that gsm8k does not take (train_size, test_size" in result.stderr
    assert "kept dev_size" in result.stderr  # gsm8k takes it too
    # The new format's options given on the same line stay.
    train = tmp_path / "train.jsonl"
    train.write_text('{"prompt": "1 + 1 =", "completion": " 2"}\n')  # validate checks it exists
    result = invoke_cli(
        "validate",
        QUICKSTART,
        "data.format.name=prompt-completion",
        f"data.format.options.train_file={train}",
    )
    assert result.exit_code == 0, result.stderr


def test_validate_shows_trust_remote_code() -> None:
    result = invoke_cli("validate", QUICKSTART, "model.trust_remote_code=true")
    assert result.exit_code == 0, result.stderr
    assert "trust_remote_code: true" in result.stdout
    plain = invoke_cli("validate", QUICKSTART)
    assert "trust_remote_code" not in plain.stdout


# --------------------------------------------------------------------------- and bugs stay 1


def test_a_real_bug_is_still_exit_1(tmp_path: Path, monkeypatch) -> None:
    def broken(path: Path, data: object) -> None:
        raise KeyError("peak_bytes")

    monkeypatch.setattr("sftkit.training.stages.claim.write_json", broken)
    result = _run(tmp_path)
    assert result.exit_code == EXIT_INTERNAL
    assert "internal error: KeyError" in result.stderr and "This is a bug" in result.stderr
    assert str(tmp_path / "run" / "sftkit.log") in result.stderr  # what to attach


def test_eval_of_a_recipe_writes_beside_its_runs() -> None:
    from sftkit.cli.evaluate import recipe_eval_dir

    assert recipe_eval_dir("runs/quickstart", "recipes/quickstart.yaml") == Path(
        "runs/eval-quickstart"
    )


def test_a_missing_test_split_is_said_once(tmp_path: Path) -> None:
    # A subprocess: under pytest the logging plugin would catch a second, logged copy.
    train = tmp_path / "train.jsonl"
    train.write_text('{"prompt": "1+1?", "completion": "#### 2"}\n' * 3)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sftkit.cli import main; main()",
            "prepare-data",
            QUICKSTART,
            "data.format.name=prompt-completion",
            f"data.format.options.train_file={train}",
            "data.format.options.dev_size=1",
            "--output",
            str(tmp_path / "prepared"),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).count("no test split") == 1, result.stderr


def test_a_run_that_failed_before_training_does_not_block_its_directory(tmp_path: Path) -> None:
    """Issue 21 case 15: a malformed data file fails the run before its first step (a
    missing one is refused before the directory is written: case 16); the rerun in the same
    directory (the file fixed, the recipe changed) is not refused."""
    malformed = tmp_path / "train.jsonl"
    malformed.write_text("not a JSON row\n")
    failed = invoke_cli(
        "run",
        QUICKSTART,
        "data.format.name=prompt-completion",
        f"data.format.options.train_file={malformed}",
        "--output-dir",
        str(tmp_path / "run"),
    )
    assert failed.exit_code == EXIT_BAD_INPUT, failed.stderr
    assert (tmp_path / "run" / "recipe.yaml").is_file()  # a run directory, with no step
    again = _run(tmp_path)
    assert again.exit_code == 0, again.stderr
    said = " ".join(again.stderr.split())
    assert f"reusing {tmp_path / 'run'}: the run there (failed: DataError: " in said
    assert "stopped before its first step, so nothing in it is lost." in said
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "completed" and "resumes" not in record


def test_fp16_on_the_cpu_is_refused_not_trained_as_fp32(tmp_path: Path) -> None:
    """Issue 21 case 5: accelerate has no fp16 autocast on the CPU; the run would be fp32."""
    result = _run(tmp_path, "training.precision=fp16")
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    said = " ".join(result.stderr.split())
    assert "training.precision is fp16, but this run trains on the CPU" in said
    assert "Use training.precision=fp32 (or bf16" in said
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_an_environment_that_contradicts_the_recipe_is_refused(tmp_path, monkeypatch) -> None:
    """Issue 21 case 4: ACCELERATE_MIXED_PRECISION=bf16 would train an fp32 recipe in bf16."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    result = _run(tmp_path, "training.precision=fp32")
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    said = " ".join(result.stderr.split())
    assert (
        "ACCELERATE_MIXED_PRECISION=bf16 would train in bf16, but training.precision is fp32"
        in said
    )
    assert "env -u ACCELERATE_MIXED_PRECISION" in said
    assert not (tmp_path / "run").exists()


def test_environment_variables_that_change_training_are_said_and_recorded(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # agrees with fp32: recorded only
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    result = _run(tmp_path, "training.precision=fp32")
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "environment: ACCELERATE_MIXED_PRECISION=no, CUBLAS_WORKSPACE_CONFIG=:4096:8" in said
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["environment_variables"]
    assert recorded["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
