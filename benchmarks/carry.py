"""What a device call carries, and whether it fits: the working tree plus the ignored paths
named in ``carry`` (the wheels the GPU image lacks in ``.whl/``, the model config and GSM8K
in ``.gpu-shared/``) must stay under 64 MiB in all, with one version of each wheel.

    python -m benchmarks.carry          # prints the sizes; exit 1 when something is wrong

`benchmarks/prepare_carry.sh` fills the two folders; the session's setup stage runs the same
check (on the GPU machine it reports what arrived; in the CPU rehearsal it is the check).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LIMIT_BYTES = 64 * 2**20
CARRIED = (".whl", ".gpu-shared")
MODEL_CONFIG = Path(".gpu-shared/models/deepseek-r1-distill-llama-8b.json")
GSM8K_DIR = Path(".gpu-shared/data/gsm8k")
# The GPU image lacks these (../shared/gpu/README.md); xxhash is a dependency of datasets
# that the image's list does not name, carried so the install cannot miss it.
REQUIRED_WHEELS = (
    "bitsandbytes",
    "trl",
    "datasets",
    "dill",
    "multiprocess",
    "liger_kernel",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_inspection",
    "xxhash",
)
# Folders that never travel (ignored by git) when there is no git to ask.
_NEVER = {".git", ".bench", ".nox", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache",
          ".hypothesis", "__pycache__", "build", "dist", "runs", "data", *CARRIED}  # fmt: skip


def path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def tree_bytes(root: Path = REPO) -> int:
    """Bytes of the working tree a call copies: tracked files and untracked ones git does not
    ignore (git's answer when it can give one, else a walk that skips the ignored folders)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root, capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        files = [root / name for name in listed.decode().split("\0") if name]
        return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())
    except (OSError, subprocess.SubprocessError):
        total = 0
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in _NEVER and not d.endswith(".egg-info")]
            total += sum((Path(folder) / n).stat().st_size for n in names)
        return total


def wheel_name(filename: str) -> tuple[str, str]:
    """(normalized distribution name, version) of a wheel file name."""
    name, version = filename.split("-")[:2]
    return name.lower().replace("-", "_").replace(".", "_"), version


def wheel_problems(whl_dir: Path) -> tuple[list[str], list[str]]:
    """(wheel file names, problems): a required wheel missing, or two versions of one."""
    files = sorted(p.name for p in whl_dir.glob("*.whl")) if whl_dir.is_dir() else []
    versions: dict[str, list[str]] = {}
    for name in files:
        dist, version = wheel_name(name)
        versions.setdefault(dist, []).append(version)
    problems = [
        f"two versions of {dist} in {whl_dir.name}/ ({', '.join(v)}): the install stops"
        for dist, v in sorted(versions.items())
        if len(v) > 1
    ]
    missing = [dist for dist in REQUIRED_WHEELS if dist not in versions]
    if missing:
        problems.append(f"{whl_dir.name}/ lacks {', '.join(missing)}")
    return files, problems


def carry_report(root: Path = REPO, carried: tuple[str, ...] = CARRIED) -> dict[str, Any]:
    """Sizes of the tree and of each carried path, the total against the limit, problems."""
    paths = {name: path_bytes(root / name) if (root / name).exists() else None for name in carried}
    tree = tree_bytes(root)
    total = tree + sum(v or 0 for v in paths.values())
    wheels, problems = wheel_problems(root / ".whl")
    if total > LIMIT_BYTES:
        problems.append(
            f"{total / 2**20:.1f} MiB to carry, over the {LIMIT_BYTES / 2**20:.0f} MiB a call may carry"
        )
    for required in (MODEL_CONFIG, GSM8K_DIR / "train.jsonl"):
        if not (root / required).is_file():
            problems.append(f"{required} is missing (benchmarks/prepare_carry.sh copies it)")
    return {
        "tree_bytes": tree,
        "paths": paths,
        "total_bytes": total,
        "limit_bytes": LIMIT_BYTES,
        "ok": not problems,
        "wheels": wheels,
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    report = carry_report()
    print(json.dumps(report, indent=1))
    mib = report["total_bytes"] / 2**20
    print(f"carry: {mib:.1f} MiB of {LIMIT_BYTES / 2**20:.0f} MiB", file=sys.stderr)
    for problem in report["problems"]:
        print(f"carry: {problem}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
