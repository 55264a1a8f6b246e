"""Run the sftkit CLI with one fault injected at a chosen moment (tests only).

    SFTKIT_TEST_FAULT=KIND:STEP python tests/fault_injection.py run RECIPE ...

is ``sftkit run RECIPE ...`` with the trainer patched in this process only; the library has
no fault hook of its own. KIND is one of

    sigint, sigterm   the process signals itself during the forward/backward of step STEP
                      (the run should stop at the end of that step, with a checkpoint)
    sigint2           two SIGINTs during step STEP (the second stops at once)
    kill              SIGKILL during step STEP
    kill-save         SIGKILL while checkpoint-STEP is being written (model written, the
                      optimizer state half-written)
    kill-final        SIGKILL while final/ is being written (STEP unused)
    kill-after-final  SIGKILL just after final/ is renamed into place, complete (STEP unused)
    sigint-eval, kill-eval   SIGINT / SIGKILL during the evaluation after training
    pause             wait during step STEP until the file $SFTKIT_TEST_GO exists
    stall-export      (`sftkit export --merge`) create $SFTKIT_TEST_READY when the merge
                      starts, then wait there (for a signal) up to 120 s
    stall-eval        (`sftkit eval`) the same as the first evaluator starts scoring
    stall-prepare     (`sftkit prepare-data`) the same while test.jsonl, the last split, is
                      being written

STEP counts optimizer steps from 1. Torch runs on one thread, so runs compare bit for bit.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(kind: str, step: int) -> None:
    import transformers

    trainer = transformers.Trainer
    original_step = trainer.training_step
    fired: list[bool] = []

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.state.global_step + 1 == step and not fired:
            fired.append(True)
            if kind in ("sigint", "sigterm"):
                os.kill(os.getpid(), signal.SIGINT if kind == "sigint" else signal.SIGTERM)
            elif kind == "sigint2":
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs between bytecodes: one at a time
                os.kill(os.getpid(), signal.SIGINT)
            elif kind == "kill":
                _kill()
            elif kind == "pause":
                go = os.environ["SFTKIT_TEST_GO"]
                deadline = time.monotonic() + 300
                while not os.path.exists(go) and time.monotonic() < deadline:
                    time.sleep(0.05)
        return original_step(self, *args, **kwargs)

    trainer.training_step = training_step  # type: ignore[method-assign]

    if kind == "kill-save":
        original_save = trainer._save_optimizer_and_scheduler

        def save_optimizer(self: Any, output_dir: str) -> None:
            if self.state.global_step == step:
                with open(os.path.join(output_dir, "optimizer.pt"), "wb") as handle:
                    handle.write(b"PK\x03\x04 half an optimizer")
                _kill()
            original_save(self, output_dir)

        trainer._save_optimizer_and_scheduler = save_optimizer  # type: ignore[method-assign]

    if kind == "kill-final":
        original_model = trainer.save_model

        def save_model(
            self: Any, output_dir: str | None = None, _internal_call: bool = False
        ) -> None:
            original_model(self, output_dir, _internal_call)
            if not _internal_call:  # final/, not a checkpoint's copy of the model
                _kill()

        trainer.save_model = save_model  # type: ignore[method-assign]

    if kind == "kill-after-final":
        original_replace = os.replace

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            original_replace(src, dst, *args, **kwargs)
            if os.path.basename(os.fspath(dst)) == "final":
                _kill()

        os.replace = replace  # type: ignore[assignment]

    if kind in ("sigint-eval", "kill-eval"):
        from sftkit.evaluation import runner

        original_evaluate = runner.evaluate_in_run

        def evaluate_in_run(*args: Any, stage: str, **kwargs: Any) -> Any:
            if stage == "after":
                if kind == "kill-eval":
                    _kill()
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler stops the run here
            return original_evaluate(*args, stage=stage, **kwargs)

        runner.evaluate_in_run = evaluate_in_run  # type: ignore[assignment]


def _stall() -> None:
    with open(os.environ["SFTKIT_TEST_READY"], "w"):
        pass
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)


def install_stall(kind: str) -> None:
    if kind == "stall-export":
        from sftkit.export import merge

        original_merge = merge.merge_adapters

        def merge_adapters(*args: Any, **kwargs: Any) -> Any:
            _stall()
            return original_merge(*args, **kwargs)

        merge.merge_adapters = merge_adapters  # type: ignore[assignment]
    if kind == "stall-prepare":
        from sftkit.data import prepare

        original_write = prepare._write_jsonl

        def write_jsonl(path: Any, rows: Any) -> None:
            original_write(path, rows)
            if os.path.basename(path) == "test.jsonl":
                _stall()

        prepare._write_jsonl = write_jsonl  # type: ignore[assignment]

    if kind == "stall-eval":
        from sftkit.evaluation import runner

        original_score = runner.score

        def score(*args: Any, **kwargs: Any) -> Any:
            _stall()
            return original_score(*args, **kwargs)

        runner.score = score  # type: ignore[assignment]


def main() -> None:
    import torch

    torch.set_num_threads(1)
    fault = os.environ.get("SFTKIT_TEST_FAULT")
    if fault:
        kind, _, step = fault.partition(":")
        if kind.startswith("stall-"):
            install_stall(kind)
        else:
            install(kind, int(step or 0))
    from sftkit.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
