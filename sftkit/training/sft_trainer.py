"""What a sftkit run changes in TRL's SFTTrainer: the README it writes into the checkpoints
folder at every save. TRL's stock card there ("fine-tuned version of [None](...)") describes
a hub model that does not exist; ours says what the folder is and how to use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sftkit.runpaths import RunPaths

CHECKPOINTS_README = """\
# Checkpoints of an sftkit run

`sftkit run` saves one `checkpoint-<step>/` folder here every `training.save_steps` steps
(and at the last step), keeping the newest `training.save_total_limit`. Each holds the
weights, optimizer, scheduler and random-number state needed to continue the run:

    sftkit run RECIPE --output-dir {run_dir} --resume

They are not meant to be shared: the trained model is in `{final}`, and

    sftkit export {run_dir}

writes a copy with its tokenizer and a model card (`--merge` for a standalone model).
"""


def checkpoints_readme(checkpoints: Path) -> str:
    paths = RunPaths(checkpoints.parent)  # the trainer's output_dir is RunPaths.checkpoints
    return CHECKPOINTS_README.format(run_dir=paths.root, final=paths.final)


def sftkit_trainer_class(base: type) -> type:
    """`base` (TRL's SFTTrainer) writing sftkit's README into the checkpoints folder."""

    class SftkitSFTTrainer(base):
        def create_model_card(self, *args: Any, **kwargs: Any) -> None:
            if not self.is_world_process_zero():
                return
            folder = Path(self.args.output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "README.md").write_text(checkpoints_readme(folder), encoding="utf-8")

    SftkitSFTTrainer.__name__ = SftkitSFTTrainer.__qualname__ = f"Sftkit{base.__name__}"
    return SftkitSFTTrainer
