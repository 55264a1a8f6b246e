"""Processes of a launch that die with their parent.

`sftkit launch` starts the launcher (accelerate or torchrun), which starts the workers. If
`sftkit launch` is killed outright (kill -9, the OOM killer), nothing would stop the others:
they would train on, orphaned, beside a `--resume` that found the run directory free. On
Linux each of them asks the kernel for a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG)``): SIGTERM, which the launcher forwards to its workers and which
stops a worker at once. Elsewhere this is a no-op; the run lock, which the workers hold too
(`sftkit.training.lock.hold_shared`), still keeps a second writer out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return getattr(libc, "prctl", None)


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A function for the process to call (or a child to run as `preexec_fn`) that has the
    kernel send `signum` to it when its parent dies. Everything it needs is looked up here,
    in the parent: after a fork only the call itself runs."""
    prctl = _prctl()
    parent = os.getpid()

    def arm() -> None:
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request: too late for it
            os.kill(os.getpid(), signum)

    return arm


def arm_here(signum: int = signal.SIGTERM) -> None:
    """This process gets `signum` when its parent (the launcher) dies."""
    prctl = _prctl()
    if prctl is None:
        return
    parent = os.getppid()
    prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)
