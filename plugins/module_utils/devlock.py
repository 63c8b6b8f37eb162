# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure parts of the device lock (edgeslim.jetson.device_lock): names, argv, holder record, decisions.

The lock is an flock(2) on a file under /run held by a transient systemd unit (flock ... sleep <ttl>), so it
outlives the module process that takes it and the kernel drops it when that unit's process dies, when the unit
reaches RuntimeMaxSec=<ttl>, or when the device reboots.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time

DEFAULT_PATH = "/run/edgeslim/device.lock"
DEFAULT_TTL = 7200
BUSY_EXIT = 75  # EX_TEMPFAIL: flock's exit status when another process holds the lock
UNIT_PREFIX = "edgeslim-lock-"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class LockError(Exception):
    """Bad input, a refusal (``extra['holder']`` names the run holding the lock) or a failed systemd call."""

    def __init__(self, msg: str, **extra: object) -> None:
        super().__init__(msg)
        self.msg = msg
        self.extra = extra


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


STOP_TIMEOUT_S = 10


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
        # flock and sleep end at once on SIGTERM; a stop that systemd does not see complete (a cgroup-empty event
        # that never comes) is cut short instead of holding the releasing run for the default 90 s.
        "-p",
        f"TimeoutStopSec={STOP_TIMEOUT_S}",
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


def read_record(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(path: str, record: dict) -> None:
    """Atomically: a temporary file beside it, then a rename, so a reader never sees half a record."""
    fd, tmp = tempfile.mkstemp(prefix=".edgeslim-lock-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def child_comms(pid: int, proc: str = "/proc") -> list:
    """Command names of the processes whose parent is ``pid``."""
    comms = []
    if pid <= 0:
        return comms
    try:
        entries = os.listdir(proc)
    except OSError:
        return comms
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat"), encoding="utf-8", errors="replace") as handle:
                comm, ppid = parse_proc_stat(handle.read())
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            comms.append(comm)
    return comms


class DeviceLock:
    """Take or give back the device lock for ``run_id`` (edgeslim.jetson.device_lock, and the engine's probe and
    verify runs). ``module`` gives ``run_command`` and ``get_bin_path``; ``check_mode`` true reports what would be
    done and starts nothing. Each method returns the module result (``changed``, ``unit``, ``held``, ``record``) or
    raises LockError (``held`` false; ``holder`` when another run holds the lock)."""

    def __init__(self, module, path: str, run_id: str, ttl: int = DEFAULT_TTL, holder: dict | None = None,
                 wait: float = 10.0, check_mode: bool = False) -> None:  # fmt: skip
        if ttl <= 0 or wait <= 0:
            raise LockError(f"ttl and wait must be > 0 seconds (ttl {ttl}, wait {wait})", held=False)
        if not os.path.isabs(path):
            raise LockError(f"path must be absolute, got {path}", held=False)
        self.module = module
        self.path = path
        self.record_path = record_path(path)
        self.run_id = run_id
        try:
            self.unit = unit_name(run_id)
        except LockError as exc:
            raise LockError(exc.msg, held=False) from None
        self.ttl = ttl
        self.holder = holder or {}
        self.wait = wait
        self.check_mode = check_mode
        self.systemctl = module.get_bin_path("systemctl", required=True)

    def show(self, unit: str) -> dict:
        rc, out, _err = self.module.run_command(
            [self.systemctl, "show", "-p", "LoadState", "-p", "ActiveState", "-p", "MainPID", unit]
        )
        return parse_show(out) if rc == 0 else {}

    def state(self, unit: str) -> tuple:
        show = self.show(unit)
        pid = int(show.get("MainPID") or 0)
        return holder_state(show, child_comms(pid)), pid

    def busy(self) -> bool:
        """True when another process holds the lock (flock for an instant, released again at once)."""
        if not os.path.exists(self.path):
            return False
        flock = self.module.get_bin_path("flock", required=True)
        rc, _out, err = self.module.run_command(probe_argv(flock, self.path))
        if rc not in (0, BUSY_EXIT):
            raise LockError(f"flock {self.path} failed (rc {rc}): {err.strip()}", held=False)
        return rc == BUSY_EXIT

    def refuse(self) -> None:
        record = read_record(self.record_path)
        live = bool(record.get("unit")) and self.state(record["unit"])[0] == "held"
        raise LockError(busy_message(self.path, record, live), unit=self.unit, held=False, holder=record or None)

    def keep_record(self, pid: int) -> dict:
        """The record of this run's lock; rewritten when missing or someone else's (a stale one)."""
        record = read_record(self.record_path)
        if record.get("run_id") == self.run_id and record.get("pid") == pid:
            return record
        record = new_record(self.run_id, self.holder, self.path, self.ttl, pid)
        write_record(self.record_path, record)
        return record

    def acquire(self) -> dict:
        state, pid = self.state(self.unit)
        if state == "held":
            record = {} if self.check_mode else self.keep_record(pid)
            return {"changed": False, "unit": self.unit, "held": True, "record": record}
        if state == "pending":
            raise LockError(f"{self.unit} is running but has not taken {self.path}; stop it first", held=False)
        if self.busy():
            self.refuse()
        if self.check_mode:
            return {"changed": True, "unit": self.unit, "held": False}

        os.makedirs(os.path.dirname(self.path) or "/", mode=0o755, exist_ok=True)
        systemd_run = self.module.get_bin_path("systemd-run", required=True)
        flock = self.module.get_bin_path("flock", required=True)
        argv = holder_argv(systemd_run, flock, self.path, self.run_id, self.ttl)
        rc, _out, err = self.module.run_command(argv)
        if rc != 0:
            raise LockError(f"could not start {self.unit}: {err.strip()}", cmd=argv, held=False)

        deadline = time.monotonic() + self.wait
        while True:
            state, pid = self.state(self.unit)
            if state == "held":
                return {"changed": True, "unit": self.unit, "held": True, "record": self.keep_record(pid)}
            if state == "ended":
                break
            if time.monotonic() >= deadline:
                self.module.run_command([self.systemctl, "stop", self.unit])
                raise LockError(f"{self.unit} neither took {self.path} nor ended within {self.wait}s; stopped it",
                                held=False)  # fmt: skip
            time.sleep(0.1)

        # The unit ended without the lock. Its exit status is gone (--collect), so ask the lock itself.
        if self.busy():
            self.refuse()
        raise LockError(
            f"{self.unit} ended without taking {self.path} although the lock is free; see journalctl -u {self.unit}",
            held=False,
        )

    def release(self) -> dict:
        state, _pid = self.state(self.unit)
        changed = state != "ended"
        if changed and not self.check_mode:
            rc, _out, err = self.module.run_command([self.systemctl, "stop", self.unit])
            if rc != 0:
                raise LockError(f"could not stop {self.unit}: {err.strip()}", held=True)
        if not self.check_mode and read_record(self.record_path).get("run_id") == self.run_id:
            os.unlink(self.record_path)
            changed = True
        return {"changed": changed, "unit": self.unit, "held": False}
