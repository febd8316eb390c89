"""Who holds a lease: each process names itself by its kernel (boot id), pid namespace and
pid, so a restarted bot on the same machine can tell that a lease's holder is gone.

A lease whose holder is provably dead (same boot, same pid namespace, no such process) is
taken up at once instead of after it runs out. Anything less certain (another machine,
another container, a pid reused by some other process) waits for the lease as before: a
live worker's step is never taken.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return None


def _here() -> str | None:
    boot = _read("/proc/sys/kernel/random/boot_id")
    namespace = _pid_namespace()
    return f"{boot}:{namespace}" if boot and namespace else None


def process_owner(role: str) -> str:
    """`worker-1a2b3c4d@<boot id>:<pid namespace>:<pid>`, or without the `@…` part where the
    system cannot say (then only the lease's expiry frees its work)."""
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    here = _here()
    return f"{name}@{here}:{os.getpid()}" if here else name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def dead_here(owners: Iterable[str]) -> list[str]:
    """The owners that were processes of this machine and pid namespace and have exited."""
    here = _here()
    if here is None:
        return []
    dead = []
    for owner in owners:
        _, at, place = owner.partition("@")
        where, _, pid = place.rpartition(":")
        mine = at and where == here and pid.isdigit() and int(pid) != os.getpid()
        if mine and not _alive(int(pid)):
            dead.append(owner)
    return dead
