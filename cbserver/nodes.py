"""Worker names: one live process per name, because the claims a worker owns carry its name.

A worker restarted under its name (after a crash, a deploy) adopts the calls its previous life
owned; a second live process under the same name would instead adopt, and hang up, calls that
are not on its Asterisk. So a name is taken by registering it, and only from a process that is
known to be gone: one on this machine whose pid no longer runs, or one not seen for its lease.
The times are the workers' own clocks: hosts keep them in step (NTP).
"""

from __future__ import annotations

import os
import secrets
import socket
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cbserver.models import WorkerNode


class WorkerNameTaken(RuntimeError):
    """Another live worker runs under this name."""


def this_instance() -> str:
    """This process's mark in the name's row."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[:100]


def this_machine() -> str:
    """The kernel boot and pid namespace this process's pid is valid in: two containers with
    one host name (host networking) are two machines, a restarted host a new one."""
    parts: list[str] = []
    with suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return ":".join(parts or [socket.gethostname()])[:100]


def _runs_here(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def register(session: Session, name: str, instance: str, now: datetime, lease: timedelta) -> None:
    """Take ``name`` for this process; raise WorkerNameTaken while another holds it. Committed."""
    host, machine, pid = socket.gethostname()[:255], this_machine(), os.getpid()
    mine = {
        "instance": instance,
        "host": host,
        "machine": machine,
        "pid": pid,
        "lease_seconds": lease.total_seconds(),
        "started_at": now,
        "seen_at": now,
    }
    held = session.get(WorkerNode, name)
    if held is None:
        session.add(WorkerNode(name=name, **mine))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise WorkerNameTaken(
                f"worker {name}: another worker registered this name at the same moment"
            ) from None
        return
    if held.instance == instance:
        return
    gone_here = held.machine == machine and (held.pid == pid or not _runs_here(held.pid))
    silent = held.seen_at < now - timedelta(seconds=held.lease_seconds)
    if not (gone_here or silent):
        ago = max(0, int((now - held.seen_at).total_seconds()))
        raise WorkerNameTaken(
            f"worker {name} is already running on {held.host} (pid {held.pid}, seen {ago} s "
            f"ago); give each worker its own name (CBSERVER_WORKER_NAME)"
        )
    # Conditional on the row as read: of two processes taking over at once, one wins.
    taken = session.execute(
        update(WorkerNode)
        .where(WorkerNode.name == name, WorkerNode.instance == held.instance)
        .values(**mine)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise WorkerNameTaken(f"worker {name}: another worker took this name at the same moment")


def heartbeat(session: Session, name: str, instance: str, now: datetime) -> bool:
    """This process is alive and still holds ``name``; False when another took it. Committed."""
    seen = session.execute(
        update(WorkerNode)
        .where(WorkerNode.name == name, WorkerNode.instance == instance)
        .values(seen_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return int(seen.rowcount) == 1  # type: ignore[attr-defined]


def release(session: Session, name: str, instance: str) -> None:
    """A stopping worker lets its name go at once. Committed."""
    session.execute(
        delete(WorkerNode).where(WorkerNode.name == name, WorkerNode.instance == instance)
    )
    session.commit()
