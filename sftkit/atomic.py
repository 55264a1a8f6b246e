"""Files and folders that readers see whole or not at all: written beside their place, then
renamed into it (a rename within a directory is atomic). A write that fails or is
interrupted leaves the old file and no temporary behind."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def writing(path: Path, *, sync: bool = False) -> Iterator[TextIO]:
    """A text handle whose content replaces `path` when the block ends without an error;
    `sync`: on disk before the rename (what a crash must not lose)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            yield handle
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, *, sync: bool = False) -> None:
    with writing(path, sync=sync) as handle:
        handle.write(text)


def replace_dir(new: Path, target: Path, *, aside: Path) -> None:
    """Put the complete folder `new` in `target`'s place; a previous `target` is moved to
    `aside` first and removed after, so a stop between the renames leaves both folders
    whole (a caller that knows the names can finish the swap)."""
    if target.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
    os.replace(new, target)
    fsync(target.parent, directory=True)  # the rename on disk before the old folder goes
    shutil.rmtree(aside, ignore_errors=True)


def fsync(path: Path, *, directory: bool = False) -> None:
    """Put a file's content, or a folder's renames and new entries, on disk (where the OS
    and the filesystem can sync it)."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a directory
        pass
    finally:
        os.close(fd)
