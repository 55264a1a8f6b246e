"""One writer per run directory: ``<run>/run.lock``, held by the process writing into it.

`sftkit run` (and `--resume`), `sftkit launch` on node 0 and `sftkit eval` into a run take
the lock before they write anything; a second one is refused with who holds it. The lock is
an advisory `flock` on the lock file, which the kernel drops when its holder dies however it
dies (kill -9 included), so a lock left by a dead process is noticed, taken over and said so;
the file holds the holder's pid, host, start time and command, for the messages. Where
`flock` is not available (some network filesystems), the file is created exclusively and a
holder on this host is checked by its pid.

`sftkit launch` shares its lock with the workers it starts (`share`, then `hold_shared` in
each worker): the lock is then free only once every process of the run is gone, so a
worker orphaned by its launcher's death still keeps `--resume` out (the workers also die
with their parent: `sftkit.launch.session`). The message names the processes that hold it
(from /proc/locks where there is one).

The lock file also keeps `RESERVE_BYTES` of disk in reserve: when the disk fills up, the run
gives them back (`release_reserve`) so that it can still record its failure in run.json.
Torch-free.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sftkit.errors import RunLockedError
from sftkit.runpaths import LOCK_FILE, RunPaths

try:  # Linux, macOS
    import fcntl
except ImportError:  # pragma: no cover - Windows: the exclusive-create fallback
    fcntl = None  # type: ignore[assignment]

RESERVE_BYTES = 64 * 1024
# flock not supported by the filesystem: fall back to exclusive creation + pid check.
NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} ({self.command}, since {self.started})"

    @classmethod
    def read(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text.split("\n", 1)[0])
            return cls(
                int(data["pid"]), str(data["host"]), str(data["started"]), str(data["command"])
            )
        except (ValueError, KeyError, TypeError):
            return None

    def alive_here(self) -> bool | None:
        """Is the holder alive? None when it is on another host (cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class RunLock:
    """The lock on one run directory; `acquire` it, `release` it (or use ``with``)."""

    def __init__(self, paths: RunPaths, fd: int, *, flocked: bool, created_root: bool) -> None:
        self.paths = paths
        self._fd: int | None = fd
        self._flocked = flocked
        self._created_root = created_root

    @classmethod
    def acquire(
        cls,
        paths: RunPaths,
        *,
        command: str,
        echo: Callable[[str], None] = lambda _: None,
    ) -> RunLock:
        """Take the lock of `paths.root` (creating the directory), or raise
        `RunLockedError` naming the live holder. A lock a dead process left is taken over,
        with a message through `echo`."""
        created_root = not paths.root.exists()
        paths.root.mkdir(parents=True, exist_ok=True)
        path = paths.lock
        for _ in range(10):  # a holder may unlink the file between our open and our flock
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                flocked = _flock(fd)
            except BlockingIOError:
                holder = Holder.read(_read(fd))
                os.close(fd)
                raise _locked(paths, holder) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno not in NO_FLOCK:
                    raise
                return cls._acquire_exclusive(
                    paths, command=command, echo=echo, created=created_root
                )
            if flocked and not _same_file(fd, path):
                os.close(fd)
                continue
            previous = Holder.read(_read(fd))
            if previous is not None and previous.pid != os.getpid():
                echo(
                    f"took over the lock of {paths.root} left by {previous.describe()}, "
                    "which is no longer running."
                )
            lock = cls(paths, fd, flocked=flocked, created_root=created_root)
            lock._write(command)
            return lock
        raise RunLockedError(f"cannot take the lock {path}: it keeps being replaced.")

    @classmethod
    def _acquire_exclusive(
        cls, paths: RunPaths, *, command: str, echo: Callable[[str], None], created: bool
    ) -> RunLock:
        path = paths.lock
        for _ in range(2):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = holder_of(paths)
                alive = holder.alive_here() if holder else False
                if alive is False:
                    echo(
                        f"took over the lock of {paths.root} left by "
                        f"{holder.describe() if holder else 'an unknown process'}, "
                        "which is no longer running."
                    )
                    path.unlink(missing_ok=True)
                    continue
                raise _locked(paths, holder, other_host=alive is None) from None
            lock = cls(paths, fd, flocked=False, created_root=created)
            lock._write(command)
            return lock
        raise _locked(paths, holder_of(paths))

    def _write(self, command: str) -> None:
        assert self._fd is not None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command,
        }
        line = (json.dumps(info) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, line, 0)
        try:  # the reserve: a full disk still lets the run record its failure
            os.pwrite(self._fd, b"\n" * RESERVE_BYTES, len(line))
            os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, len(line))

    def share(self) -> None:
        """Turn the lock shared, so that the workers this process starts hold it with it
        (`hold_shared`); others are still refused. Without flock there is nothing to share
        (the pid check covers this process only)."""
        if self._fd is None or not self._flocked or fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # the kernel drops, then re-takes: another took it between
            raise _locked(self.paths, holder_of(self.paths)) from None

    def inherited(self) -> tuple[int, ...]:
        """The descriptor a child process may inherit to hold this very lock with its
        parent (`subprocess`'s pass_fds): the lock is then free only once both are gone."""
        return (self._fd,) if self._fd is not None and self._flocked else ()

    def release_reserve(self) -> None:
        """Give the reserved bytes back to a full disk."""
        if self._fd is not None:
            text = _read(self._fd)
            os.ftruncate(self._fd, len(text.split("\n", 1)[0]) + 1)

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one else locks the dying
        file), then let go; a run directory this lock created and nothing else used goes."""
        if self._fd is None:
            return
        try:
            self.paths.lock.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
        if self._created_root:
            with contextlib.suppress(OSError):  # only if empty: a run that wrote nothing
                self.paths.root.rmdir()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holder_of(paths: RunPaths) -> Holder | None:
    """Who the lock file names (alive or not), or None."""
    try:
        return Holder.read(paths.lock.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def check_unlocked(paths: RunPaths) -> None:
    """Raise `RunLockedError` if a live process holds the lock of `paths.root`. Writes
    nothing (a quick refusal before any work; `RunLock.acquire` is the real claim)."""
    if not paths.lock.is_file():
        return
    try:
        fd = os.open(paths.lock, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        try:
            _flock(fd)
        except BlockingIOError:
            raise _locked(paths, Holder.read(_read(fd))) from None
        except OSError as exc:
            if exc.errno not in NO_FLOCK:
                raise
            holder = Holder.read(_read(fd))
            alive = holder.alive_here() if holder else False
            if alive is not False:
                raise _locked(paths, holder, other_host=alive is None) from None
    finally:
        os.close(fd)  # also drops the probe's own flock


# The shared hold of this process (a launched worker), kept open until it exits.
_held: list[int] = []


def hold_shared(paths: RunPaths) -> bool:
    """A launched worker joins its launcher's shared lock (see the module docstring), held
    until the worker exits. False where there is nothing to join (no lock file: another
    node without the run directory; no flock); `RunLockedError` if another process holds
    the lock exclusively (this run is not the one writing there)."""
    try:
        fd = os.open(paths.lock, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        if fcntl is None:  # pragma: no cover
            raise OSError(errno.ENOSYS, "no fcntl")
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _locked(paths, holder_of(paths)) from None
    except OSError as exc:
        os.close(fd)
        if exc.errno not in NO_FLOCK:
            raise
        return False
    _held.append(fd)
    return True


def lock_holders(path: Path) -> list[int]:
    """The pids holding an flock on `path`, from /proc/locks (Linux); [] elsewhere."""
    try:
        stat = os.stat(path)
        lines = Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []
    here = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    pids = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        if parts[5] == here and parts[4].isdigit():
            pids.append(int(parts[4]))
    return sorted(set(pids))


def check_no_run_holds(path: Path) -> None:
    """Raise `RunLockedError` if `path` is in (or is) a run directory a live process holds,
    however the path is spelled: `sftkit prepare-data --force` into RUN/data, named by
    output_dir=RUN or by data.prepared_dir=RUN/data, would change a live run's data."""
    target = Path(path).resolve()
    for directory in (target, *target.parents):
        if (directory / LOCK_FILE).is_file():
            check_unlocked(RunPaths(directory))


def _flock(fd: int) -> bool:
    if fcntl is None:  # pragma: no cover
        raise OSError(errno.ENOSYS, "no fcntl")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _locked(paths: RunPaths, holder: Holder | None, *, other_host: bool = False) -> RunLockedError:
    who = holder.describe() if holder else "another process"
    if holder is not None and holder.alive_here() is False:
        # Its launcher is gone, its workers are not: name them.
        pids = [pid for pid in lock_holders(paths.lock) if pid != os.getpid()]
        shown = f"pid {', '.join(map(str, pids))}" if pids else "other processes"
        return RunLockedError(
            f"{paths.root} is in use by {shown}, which {holder.describe()} started; that "
            "process is no longer running, but they are.",
            hint=f"Wait for them to finish, or stop them (`kill {' '.join(map(str, pids))}`), "
            "then continue with --resume."
            if pids
            else "Wait for them to finish, or stop them, then continue with --resume.",
        )
    hint = (
        f"Wait for it to finish, or stop it (`kill -INT {holder.pid}` stops a run at its next "
        "step with a checkpoint), then continue with --resume."
        if holder
        else "Wait for it to finish, then continue with --resume."
    )
    if other_host:
        hint += f" If nothing runs there any more, delete {paths.lock}."
    return RunLockedError(f"{paths.root} is in use by {who}.", hint=hint)


def command_line() -> str:
    """This process's command, shortened for the lock file."""
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    text = " ".join(args)
    return text if len(text) <= 200 else text[:197] + "..."
