"""Step processes die with their run worker. Imported only by the forkserver of a range run's executor (first in
its preload list, automation/executor.py), never elsewhere.

A killed run worker (SIGKILL, the OOM killer) would otherwise leave its step processes running unseen: they are the
forkserver's children, and the forkserver outlives the worker while they run (each holds its "alive" pipe), so they
would go on writing the stores the next run writes too, once it has failed the dead run and freed its pool slots.
So Linux is asked to SIGKILL the forkserver when the run worker ends, and each step process when the forkserver
ends: a killed worker takes its steps with it at once, as a killed in-process run does.

Before each fork the forkserver also freezes its objects (``gc.freeze``), so step processes share the preloaded
definitions' memory instead of copying it page by page.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with(parent: int) -> None:
    """Be SIGKILLed when ``parent``, this process's parent, ends (and now, if it already has)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


FORKSERVER = os.getpid()  # imported in the forkserver
_forking = 0  # the pid of the process that forks, copied into its child


def _before_fork() -> None:
    global _forking
    _forking = os.getpid()
    if _forking == FORKSERVER:
        # Out of the collector's reach: a step's collections would otherwise write into every preloaded object's
        # page, copying them (about 60 MB a step process).
        gc.freeze()


def _after_fork_in_child() -> None:
    """A step process, forked by the forkserver, dies with it. The hook is inherited: forks by a step process are
    left alone (their children's lives are the step's business)."""
    if _forking == FORKSERVER and sys.platform == "linux":
        die_with(FORKSERVER)


if sys.platform == "linux":
    die_with(os.getppid())  # the forkserver, with the run worker that started it
os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
