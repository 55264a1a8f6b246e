"""Developer sessions. `nox` runs tests, plugins, minimums, lint and typecheck (about 8 minutes
on 2 idle cores, 19 on loaded ones, as measured in issue 21); `nox -s quickstart`
installs sftkit and runs the embedded default (README.md); `nox -s newest`
(the newest releases, not by default) and `nox -s gpu`
is opt-in (it runs the tests marked `gpu` in the current environment, on a machine with
CUDA), and so is `nox -s rehearsal` (the one-call GPU session rehearsed on the CPU,
docs/benchmarks.md).

Pass pytest arguments after `--`, e.g. `nox -s tests -- -k recipe -x`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import nox
import tomllib

nox.options.sessions = ["tests", "plugins", "minimums", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


class _NoUvNotice(logging.Filter):
    """nox looks for uv before every session, whatever the backend, and says "uv binary not
    found." when it is absent; these sessions use virtualenv and do not need it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "uv binary not found."


logging.getLogger("nox").addFilter(_NoUvNotice())

# Install torch before anything that depends on it: an unpinned `torch` from the package
# index is the CUDA build with several GB of extra packages. On the project's CPU machines
# `torch==2.13.0` resolves to the CPU wheel in the local wheelhouse. Override with e.g.
# SFTKIT_TORCH_SPEC="torch>=2.6" on a machine that has the build you want. Elsewhere, point
# SFTKIT_TORCH_INDEX at PyTorch's CPU wheel index (README.md, "Install").
TORCH_SPEC = os.environ.get("SFTKIT_TORCH_SPEC", "torch==2.13.0")
TORCH_INDEX = os.environ.get("SFTKIT_TORCH_INDEX")
SOURCES = ["sftkit", "tests", "plugins", "benchmarks", "noxfile.py"]
# The exact versions the documented figures were printed with (the file says how to move on).
CONSTRAINTS = ("-c", "constraints.txt")


def _install_sftkit(session: nox.Session, extras: str = "dev") -> None:
    session.install(TORCH_SPEC, *(("--index-url", TORCH_INDEX) if TORCH_INDEX else ()))
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")


@nox.session(default=False)
def quickstart(session: nox.Session) -> None:
    """Install sftkit with the training stack at the tested versions (constraints.txt) and
    run the embedded default, recipes/quickstart.yaml (offline, on the CPU, about 1.5 minutes
    on 2 idle cores), into runs/quickstart; a second call resumes or shows that run.
    Arguments after `--` are overrides or options, e.g.
    `nox -s quickstart -- training.max_steps=40 --output-dir runs/qs-short`."""
    _install_sftkit(session, extras="train")
    # Again: finish (or just show) the run already there instead of refusing its directory.
    again = ["--resume"] if Path("runs/quickstart/recipe.yaml").is_file() else []
    session.run(
        "sftkit",
        "run",
        "recipes/quickstart.yaml",
        *again,
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1"},
    )


@nox.session
def tests(session: nox.Session) -> None:
    """The CPU test suite (GPU tests are skipped without CUDA)."""
    _install_sftkit(session)
    session.run("pytest", "-m", "not gpu", *session.posargs, env={"HF_HUB_OFFLINE": "1"})


@nox.session
def plugins(session: nox.Session) -> None:
    """Install every example plugin under plugins/ and run its own tests."""
    _install_sftkit(session)
    packages = sorted(
        p for p in os.listdir("plugins") if os.path.isfile(f"plugins/{p}/pyproject.toml")
    )
    for package in packages:
        session.install("--no-deps", "-e", f"plugins/{package}")
    for package in packages:
        session.run(
            "pytest", f"plugins/{package}/tests", *session.posargs, env={"HF_HUB_OFFLINE": "1"}
        )


def minimum_pins() -> list[str]:
    """``pkg==X`` for each ``pkg>=X`` of pyproject.toml's train extra (torch aside: PyPI's old
    Linux torch wheels carry CUDA, gigabytes, so the session keeps TORCH_SPEC's)."""
    pyproject = Path(__file__).resolve().parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    pins = []
    for requirement in project["optional-dependencies"]["train"]:
        match = re.fullmatch(r"([\w-]+)\s*>=\s*([\w.]+)", requirement.strip())
        if match and match.group(1) not in ("torch", "tensorboard", "matplotlib"):
            pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


@nox.session
def minimums(session: nox.Session) -> None:
    """The training stack at the minimums pyproject.toml declares, running a smoke subset:
    the quickstart for a few steps, one LoRA and one QLoRA step, TRL's labels."""
    session.install(TORCH_SPEC)
    constraints = Path(session.create_tmp()) / "minimums.txt"
    constraints.write_text("\n".join(minimum_pins()) + "\n", encoding="utf-8")
    session.install("-c", str(constraints), "-e", ".[dev]")
    session.run(
        "pytest",
        "tests/test_minimums.py",
        "tests/test_versions.py",
        "tests/test_compat.py",
        "tests/test_data_chat.py::test_trl_builds_sftkits_labels",
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1"},
    )


@nox.session(default=False)
def newest(session: nox.Session) -> None:
    """The newest releases of the training stack, running the minimums' smoke subset and the
    compat gate (`sftkit/compat.py`): checking a new release is this one command. When it
    passes, raise `compat.TESTED` to the versions it printed."""
    session.install(TORCH_SPEC, *(("--index-url", TORCH_INDEX) if TORCH_INDEX else ()))
    session.install("--upgrade", "-e", ".[dev]")
    session.run(
        "python", "-c", "from sftkit import compat; print(*compat.check() or ['as tested'])"
    )  # fmt: skip
    session.run(
        "pytest",
        "tests/test_minimums.py",
        "tests/test_compat.py",
        "tests/test_data_chat.py::test_trl_builds_sftkits_labels",
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install(*CONSTRAINTS, "ruff")
    paths = [p for p in SOURCES if os.path.exists(p)]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the library."""
    session.install(*CONSTRAINTS, "mypy", "types-PyYAML", "-e", ".")
    session.run("mypy", "sftkit")


@nox.session(default=False, venv_backend="none")
def gpu(session: nox.Session) -> None:
    """Tests marked `gpu`, in the current environment, which must have a CUDA build of torch
    and the training stack (`pip install -e '.[dev]'`): nothing is installed, so it also runs
    on an offline GPU machine. Fails without a CUDA device instead of skipping everything."""
    session.run(
        "python",
        "-c",
        "import sys, torch; sys.exit(0 if torch.cuda.is_available() else "
        "'nox -s gpu: no CUDA device here (the gpu tests would all be skipped)')",
    )
    session.run(
        "python", "-m", "pytest", "-m", "gpu", *session.posargs, env={"HF_HUB_OFFLINE": "1"}
    )


@nox.session(default=False)
def rehearsal(session: nox.Session) -> None:
    """The one-call GPU session (benchmarks/run_gpu.sh) rehearsed on the CPU with the tiny
    model: every stage, under 3 minutes, and the carry under 64 MiB. Fill .whl/ and
    .gpu-shared/ first with `bash benchmarks/prepare_carry.sh` (the carry check needs them)."""
    _install_sftkit(session)
    session.run(
        "pytest",
        "tests/test_benchmarks.py",
        "-k",
        "rehearsal",
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "SFTKIT_REHEARSAL": "1"},
    )
