# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure parts of the device lock (edgeslim.jetson.device_lock): names, argv, holder record, decisions.

The lock is an flock(2) on a file under /run held by a transient systemd unit (flock ... sleep <ttl>), so it
outlives the module process that takes it and the kernel drops it when that unit's process dies, when the unit
reaches RuntimeMaxSec=<ttl>, or when the device reboots.
"""

from __future__ import annotations

import re
import time

DEFAULT_PATH = "/run/edgeslim/device.lock"
DEFAULT_TTL = 7200
BUSY_EXIT = 75  # EX_TEMPFAIL: flock's exit status when another process holds the lock
UNIT_PREFIX = "edgeslim-lock-"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class LockError(Exception):
    pass


def check_run_id(run_id: str) -> str:
    """A run id becomes part of a unit name: letters, digits, ``_.-``, at most 64 characters."""
    if not _RUN_ID.match(run_id or ""):
        raise LockError(
            f"run_id {run_id!r}: use 1-64 letters, digits, '_', '.' or '-' (starting with a letter or digit); "
            "it names the systemd unit that holds the lock"
        )
    return run_id


def unit_name(run_id: str) -> str:
    return UNIT_PREFIX + check_run_id(run_id) + ".service"


def record_path(lock_path: str) -> str:
    """The holder record lives beside the lock: /run/edgeslim/device.lock -> /run/edgeslim/device.json."""
    base = lock_path[:-5] if lock_path.endswith(".lock") else lock_path
    return base + ".json"


def holder_argv(systemd_run: str, flock: str, lock_path: str, run_id: str, ttl: int) -> list:
    """The transient unit that takes the lock and keeps it for at most ``ttl`` seconds."""
    if ttl <= 0:
        raise LockError(f"ttl must be > 0 seconds, got {ttl}")
    return [
        systemd_run,
        "--unit",
        unit_name(run_id),
        "--collect",
        "--quiet",
        "-p",
        f"RuntimeMaxSec={ttl}",
        "--",
        flock,
        "--nonblock",
        "--conflict-exit-code",
        str(BUSY_EXIT),
        lock_path,
        "sleep",
        str(ttl),
    ]


def probe_argv(flock: str, lock_path: str) -> list:
    """Try the lock for an instant: exit 0 = free (released again at once), BUSY_EXIT = held."""
    return [flock, "--nonblock", "--conflict-exit-code", str(BUSY_EXIT), lock_path, "true"]


def parse_show(text: str) -> dict:
    """``systemctl show -p A -p B`` output -> {A: ..., B: ...}."""
    out = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_proc_stat(text: str) -> tuple:
    """/proc/<pid>/stat -> (comm, ppid); the comm is in parentheses and may itself contain spaces or ')'."""
    head, sep, tail = text.rpartition(")")
    if not sep or "(" not in head:
        raise ValueError("not a /proc/<pid>/stat line")
    comm = head.partition("(")[2]
    fields = tail.split()
    return comm, int(fields[1])


def holder_state(show: dict, child_comms: list) -> str:
    """What the holder unit is doing, from ``systemctl show`` and the commands its main process runs.

    flock forks the command only once it has the lock, so a ``sleep`` child of the unit's main process means
    "held". The unit's exit status cannot tell "busy" after it ends: --collect unloads it at once. So:
    ``held``, ``pending`` (started, no decision yet), or ``ended`` (gone or inactive).
    """
    active = show.get("ActiveState", "")
    if show.get("LoadState") == "not-found" or active in ("inactive", "failed", "deactivating", ""):
        return "ended"
    if active == "active" and "sleep" in child_comms:
        return "held"
    return "pending"


def new_record(run_id: str, holder: dict, lock_path: str, ttl: int, pid: int, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    record = {
        "run_id": run_id,
        "controller": holder.get("controller") or "unknown",
        "user": holder.get("user") or "unknown",
        "playbook": holder.get("playbook") or "unknown",
        "started": holder.get("started") or _iso(now),
        "acquired": _iso(now),
        "expires": _iso(now + ttl),
        "ttl": ttl,
        "unit": unit_name(run_id),
        "pid": pid,
        "lock": lock_path,
    }
    return record


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def describe(record: dict) -> str:
    """One line naming a holder from its record."""
    return "run {} ({}, {}@{}, started {}, lock expires {})".format(
        record.get("run_id", "?"),
        record.get("playbook", "?"),
        record.get("user", "?"),
        record.get("controller", "?"),
        record.get("started", "?"),
        record.get("expires", "?"),
    )


def busy_message(lock_path: str, record: dict, record_live: bool) -> str:
    """The refusal: who holds the lock and how to end it; ``record_live`` = the recorded unit still runs."""
    if record and record_live:
        return (
            "another edgeslim run holds the device lock {}: {}; nothing was changed. Try again when it ends, or "
            "end it on the device with: systemctl stop {}".format(lock_path, describe(record), record.get("unit"))
        )
    last = f" (last record: {describe(record)})" if record else ""
    return (
        f"the device lock {lock_path} is held by a process with no current edgeslim holder record{last}; nothing was "
        f"changed. Find it with: fuser -v {lock_path}"
    )
