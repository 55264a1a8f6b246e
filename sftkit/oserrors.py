"""OS errors in sftkit's words: what happened, where, and what to do.

A full disk, a read-only file system, a denied permission or a path that runs through a file
are for the user to fix, not bugs: each becomes a `FileSystemError` (exit 2). Libraries often
wrap them (torch's "file write failed", safetensors' ``IoError(... StorageFull ...)``), so
the exception chain and the message are searched too. `check_can_create` finds the common
cases before a command has done any work.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sftkit.errors import FileSystemError, SftkitError

# Message signatures of errno values in errors that are not OSError (torch, safetensors).
SIGNATURES = (
    (errno.ENOSPC, re.compile(r"No space left on device|StorageFull|os error 28|Errno 28")),
    (errno.EDQUOT, re.compile(r"Disk quota exceeded|FilesystemQuotaExceeded|os error 122")),
    (errno.EROFS, re.compile(r"Read-only file system|ReadOnlyFilesystem|os error 30|Errno 30")),
    (errno.EACCES, re.compile(r"Permission denied|PermissionDenied|os error 13|Errno 13")),
)
WRITE_FAILED = re.compile(r"file write failed|failed writing file")
LOW_SPACE = 256 * 2**20  # bytes free below which a failed write means a full disk
ELSEWHERE = "or choose another output directory"

_writing: list[Path] = []  # the directories the running command writes into (innermost last)


@contextmanager
def writing_to(directory: Path | str) -> Iterator[None]:
    """Name the directory the command in this block writes into, for errors that do not
    name a file (a write to an already open file failing with 'no space left'): an OS
    error leaving the block leaves it as a `FileSystemError` that says where."""
    _writing.append(Path(directory))
    try:
        yield
    except SftkitError:
        raise
    except Exception as exc:
        error = from_exception(exc)
        if error is None:
            raise
        raise error from exc
    finally:
        _writing.pop()


def _walk(exc: BaseException) -> Iterator[BaseException]:
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__


def from_exception(exc: BaseException) -> FileSystemError | None:
    """The `FileSystemError` for `exc` if it is (or wraps, or reports) an OS error; else None."""
    for error in _walk(exc):
        if isinstance(error, OSError) and error.errno is not None:
            return describe(error.errno, error.filename, error.strerror or str(error))
    text = "\n".join(str(e) for e in _walk(exc))
    for code, pattern in SIGNATURES:
        if pattern.search(text):
            return describe(code, None, os.strerror(code))
    # torch.save on a full disk says only "file write failed"; the free space tells.
    if WRITE_FAILED.search(text) and _writing and _free_bytes(_writing[-1]) < LOW_SPACE:
        return describe(errno.ENOSPC, None, os.strerror(errno.ENOSPC))
    return None


def _free_bytes(directory: Path) -> int:
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return 1 << 62


def describe(code: int, filename: object, strerror: str) -> FileSystemError:
    path = Path(os.fsdecode(filename)) if isinstance(filename, str | bytes) else None
    where = path or (_writing[-1] if _writing else None)
    at = f" ({where})" if where else ""
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if code == errno.ENOSPC else "disk quota exceeded"
        return FileSystemError(
            f"{what}{f' holding {where}' if where else ''}.",
            hint=f"Free space there (`df -h {where or '.'}` shows how much is left), {ELSEWHERE}.",
        )
    if code == errno.EROFS:
        return FileSystemError(
            f"{where or 'the path'} is on a read-only file system.",
            hint=f"Write to a directory on a writable file system: {ELSEWHERE}.",
        )
    if code in (errno.EACCES, errno.EPERM):
        return FileSystemError(
            f"permission denied{at}.",
            hint=f"Give yourself write access there, {ELSEWHERE}.",
        )
    if code == errno.ENOTDIR and path is not None:
        blocker = _file_in_the_way(path)
        if blocker is not None:
            return FileSystemError(
                f"{path} cannot be created: {blocker} is a file, not a directory.",
                hint=f"Move {blocker} away, {ELSEWHERE}.",
            )
    if code == errno.EISDIR and path is not None:
        return FileSystemError(
            f"{path} is a directory, where a file was expected.",
            hint="Point the setting at the file inside it.",
        )
    if code == errno.ENOENT and path is not None:
        return FileSystemError(f"{path} does not exist.", hint="Check the path.")
    return FileSystemError(f"{strerror}{at}.", hint="Check the path and the file system.")


def _file_in_the_way(path: Path) -> Path | None:
    for parent in (path, *path.parents):
        if os.path.lexists(parent):
            return parent if not parent.is_dir() else None
    return None


def check_can_create(path: Path, what: str) -> None:
    """Raise `FileSystemError` if `path` (a directory sftkit is about to create or write
    into, `what` says which) is under a file, not writable, or on a read-only file system."""
    path = Path(path)
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            raise FileSystemError(
                f"{what} {path} is a file, not a directory.",
                hint=f"Move the file away, {ELSEWHERE}.",
            )
        raise FileSystemError(
            f"{what} {path} cannot be created: {existing} is a file, not a directory.",
            hint=f"Move {existing} away, {ELSEWHERE}.",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        statvfs = getattr(os, "statvfs", None)  # POSIX only
        readonly = bool(statvfs and statvfs(existing).f_flag & os.ST_RDONLY)
        if readonly:
            raise FileSystemError(
                f"{what} {path} is on a read-only file system ({existing}).",
                hint=f"Write to a directory on a writable file system: {ELSEWHERE}.",
            )
        raise FileSystemError(
            f"{what} {path}: permission denied, {existing} is not writable.",
            hint=f"Give yourself write access to {existing}, {ELSEWHERE}.",
        )


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (setting it to read
    it back would widen, for a moment, every file another thread creates)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_to_umask(directory: Path) -> None:
    """Give the files of `directory` that a library wrote private (0600: safetensors writes
    its files so) the mode the user's umask gives any new file, as `open` would have: a
    model or checkpoint shared through group or other permissions stays readable by them."""
    mode = 0o666 & ~current_umask()
    for path in Path(directory).rglob("*"):
        if path.is_file() and not path.is_symlink() and (path.stat().st_mode & 0o777) == 0o600:
            path.chmod(mode)
