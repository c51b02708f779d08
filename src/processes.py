"""Processes that end with the process that started them: fold-model workers (src.workers)
and the stages src.bench and the Kaggle kernel (kaggle/entry.py) run. A SIGKILL leaves a
process's children running; each child watches its parent instead, and ends within a
second of it."""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings

PARENT_PID_ENV = "DIGITS_PARENT_PID"  # set for a stage another stage runs: see follow_parent


def exit_when_orphaned(parent: int, poll_seconds: float = 1.0) -> None:
    """End this process once its parent has died (a killed run), whatever it is doing: an
    orphan would race the rerun that resumes it, or run on unseen."""
    while os.getppid() == parent:
        time.sleep(poll_seconds)
    try:  # a pipe its parent's reader closed (`| tee`, a notebook) must not keep it alive
        print(f"stopped: process {parent}, which started this one, has ended",
              file=sys.stderr, flush=True)
    finally:
        os._exit(1)  # what it was saving is a partial file the next run removes


def watch_parent(parent: int) -> None:
    """exit_when_orphaned(parent) in a daemon thread."""
    threading.Thread(target=exit_when_orphaned, args=(parent,), daemon=True).start()


def child_environment() -> dict[str, str]:
    """The environment for a stage this process runs (src.bench's runs of src.tune and
    src.submit): the same, plus this process's pid, so that the stage ends with it."""
    return {**os.environ, PARENT_PID_ENV: str(os.getpid())}


def follow_parent() -> None:
    """In a stage started with child_environment, end when the process that started it
    ends. A SIGKILL leaves its children running: a killed bench would leave a run of
    python -m src.submit training for its whole budget beside the bench resumed after it."""
    parent = os.environ.pop(PARENT_PID_ENV, "")  # not for this stage's own children
    if os.name != "posix" or not (parent.isascii() and parent.isdigit()
                                  and 0 < int(parent) < 2**31):  # else no process's
        return  # elsewhere os.getppid() does not change when the parent dies
    if os.getppid() != int(parent) and is_running(int(parent)):  # set by hand, say
        warnings.warn(f"{PARENT_PID_ENV}={parent} names a process that is not this one's "
                      "parent: ignored", stacklevel=2)
        return
    watch_parent(int(parent))  # a parent that has already ended ends this one at once


def is_running(pid: int) -> bool:
    """Whether process pid exists on this machine (on other systems than POSIX, assumed)."""
    if os.name != "posix":
        return True  # no safe check without a POSIX kill(pid, 0): keep the file
    if not 0 < pid < 2**31:  # kill(0) signals this process group; no pid is this large
        return False
    try:
        os.kill(pid, 0)  # signal 0 checks that the process exists and sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
