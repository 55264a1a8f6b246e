"""Developer sessions. `nox` runs tests, lint and typecheck; `nox -s gpu` is opt-in (it runs
the tests marked `gpu` in the current environment, on a machine with CUDA), and so is
`nox -s rehearsal` (the one-call GPU session rehearsed on the CPU, docs/benchmarks.md).

Pass pytest arguments after `--`, e.g. `nox -s tests -- -k recipe -x`.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "plugins", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

# Install torch before anything that depends on it: an unpinned `torch` from the package
# index is the CUDA build with several GB of extra packages. On the project's CPU machines
# `torch==2.13.0` resolves to the CPU wheel in the local wheelhouse. Override with e.g.
# SFTKIT_TORCH_SPEC="torch>=2.6" on a machine that has the build you want.
TORCH_SPEC = os.environ.get("SFTKIT_TORCH_SPEC", "torch==2.13.0")
SOURCES = ["sftkit", "tests", "plugins", "benchmarks", "noxfile.py"]


def _install_sftkit(session: nox.Session, extras: str = "dev") -> None:
    session.install(TORCH_SPEC)
    session.install("-e", f".[{extras}]")


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


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    paths = [p for p in SOURCES if os.path.exists(p)]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the library."""
    session.install("mypy>=1.11", "types-PyYAML", "-e", ".")
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
