"""One rank of a launched run: ``python -m sftkit.launch.worker RUN_DIR [--resume]``.

`sftkit launch` has already claimed RUN_DIR, checked memory, written recipe.yaml and the
engine configs, and prepared the data, so a worker only joins the process group, reads the
resolved recipe, and trains. It joins the group first: on other nodes RUN_DIR (on a shared
filesystem) is complete only once node 0's workers exist, and the rendezvous waits for them.
Rank 0 writes everything the run directory holds besides checkpoint shards.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sftkit.distributed.launch import ENV_BACKEND
from sftkit.distributed.rank import is_main_process, local_rank, rank
from sftkit.launch.lifetime import arm_here


def join_process_group() -> str:
    """Initialise torch.distributed from the launcher's environment; the device type."""
    import torch
    import torch.distributed as dist

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    backend = os.environ.get(ENV_BACKEND) or ("gloo" if use_cpu else "nccl")
    if not use_cpu:
        torch.cuda.set_device(local_rank())
    # One process under `accelerate launch` (distributed_type NO) gets no rendezvous address.
    if "MASTER_ADDR" in os.environ and not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return "cpu" if use_cpu else "cuda"


def train_rank(run_dir: Path, *, resume: bool) -> None:
    from rich.console import Console

    from sftkit.engine import engine_of
    from sftkit.quiet import log_to
    from sftkit.recipe.load import load_recipe
    from sftkit.registry import default_registry
    from sftkit.runpaths import RunPaths
    from sftkit.training.checkpoints import choose_checkpoint
    from sftkit.training.context import RunContext
    from sftkit.training.lock import hold_shared
    from sftkit.training.runner import execute_run
    from sftkit.training.trainer import load_carry

    paths = RunPaths(run_dir)
    hold_shared(paths)  # the run stays locked while any of its workers lives
    if is_main_process():
        log_to(paths.log)  # the libraries' messages, as in `sftkit run`
    device = join_process_group()
    resolved = load_recipe(paths.launch.worker_recipe, registry=default_registry())
    recipe = resolved.recipe
    os.environ.update(engine_of(recipe).worker_environment(recipe))
    if recipe.model.random_init:
        _write_random_base_once(recipe, paths.base)
    # The checkpoint `sftkit launch` chose on node 0 (the newest complete one).
    point = choose_checkpoint(paths).checkpoint if resume else None
    ctx = RunContext(
        resolved=resolved,
        paths=paths,
        device=device,
        resumed_from=point.path if point is not None else None,
    )
    if point is not None:
        ctx.carried = load_carry(point.path, rank())
    # Only rank 0 talks; the others' errors still surface through their exit status.
    console = Console(stderr=True, quiet=not is_main_process())
    execute_run(ctx, console=console)


def _write_random_base_once(recipe: Any, directory: Path) -> None:
    """Rank 0 writes the seeded random base; the others wait, then load it like a download."""
    import torch.distributed as dist

    from sftkit.modeling import load_tokenizer, random_base

    if is_main_process():
        random_base(recipe, load_tokenizer(recipe), directory)
    if dist.is_initialized():
        dist.barrier()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sftkit.launch.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    arm_here()  # an orphaned worker would train on beside a resume: die with the launcher
    from sftkit.progress import Display, use
    from sftkit.quiet import adopt_loaded, quiet_libraries

    if not is_main_process():
        # Rank 0 speaks for the run; the others' library warnings would repeat its own.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore")
    from sftkit.errors import EXIT_INTERNAL, EXIT_OK, SftkitError

    # As the CLI does: the libraries' logging, warnings and bars go to the run's sftkit.log.
    verbose = os.environ.get("SFTKIT_VERBOSE", "") not in ("", "0")
    try:
        with quiet_libraries(verbose=verbose), use(Display(on_activity=adopt_loaded)):
            train_rank(args.run_dir, resume=args.resume)
    except SftkitError as exc:
        print(f"[rank {rank()}] error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:
        print(f"[rank {rank()}] internal error:", file=sys.stderr)
        traceback.print_exc()
        return EXIT_INTERNAL
    finally:
        _leave_process_group()
    return EXIT_OK


def _leave_process_group() -> None:
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_now(code: int) -> None:
    """Run the atexit handlers (trackers finishing uploads, logging), flush, and exit without
    tearing down the interpreter's modules: that teardown takes seconds after torch,
    transformers and TRL, per rank, and the launcher waits for the slowest."""
    import atexit

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
