"""TRL's frozen reference adapter (``ref``) under LoRA/QLoRA, kept out of final/.

TRL's DPO and GRPO trainers copy the starting adapter as a frozen ``ref`` adapter on the
same base weights when their reference is needed, and save it beside the trained one, as a
subfolder. final/ is the trained adapter: the copy is not a result (checkpoints keep it, so
a resumed run has it back)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


class ReferenceAdapterNotFinal:
    """Mixed into an objective's trainer before its TRL trainer."""

    parts: Any

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)  # type: ignore[misc]
        final = self.parts.paths.partial_final
        if output_dir is not None and Path(output_dir) == final and self.is_world_process_zero():  # type: ignore[attr-defined]
            shutil.rmtree(final / "ref", ignore_errors=True)
