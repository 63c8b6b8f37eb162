#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: device_lock
short_description: Take or release the one edgeslim lock of a device, held by a transient systemd unit
description:
  - One lock per device for every edgeslim run (slim, ansible-pull, rollback, audit), so two runs never change or
    read a device at the same time.
  - V(acquired) starts the transient unit C(edgeslim-lock-<run_id>.service) (C(systemd-run --collect
    -p RuntimeMaxSec=<ttl>)) running C(flock --nonblock --conflict-exit-code 75 <path> sleep <ttl>). The
    lock is a C(flock) lock (flock(2)) on O(path), so it outlives this module's process, and the kernel drops it
    as soon as the unit's process dies (killed, stopped), the unit reaches its RuntimeMaxSec, or the device
    reboots (/run is a tmpfs).
  - The holder record (run id, controller, user, playbook, start time, expiry) is written to the C(.json) beside
    O(path) once the lock is held. A run that finds the lock held fails, naming the holder from that record, and
    changes nothing.
  - Taking a lock this run already holds (same O(run_id), unit running) changes nothing, so a play can take it
    again after each reboot it causes.
  - V(released) stops the unit (the kernel releases the lock) and removes the record if it is this run's.
version_added: 0.1.0
author: edgeslim maintainers (@edgeslim)
requirements:
  - systemd (C(systemd-run) with C(--collect), systemd 236 or later) and util-linux C(flock) on the device.
options:
  state:
    description: V(acquired) takes the lock for O(run_id); V(released) gives it back.
    type: str
    choices: [acquired, released]
    default: acquired
  run_id:
    description:
      - Identifies the run; names the holder unit. 1-64 letters, digits, C(_), C(.) or C(-).
    type: str
    required: true
  path:
    description: The lock file (its directory is created). The holder record is the same path with C(.json).
    type: path
    default: /run/edgeslim/device.lock
  ttl:
    description:
      - Seconds the lock is held at most (the unit's RuntimeMaxSec). Bounds how long a run whose controller
        died keeps other runs out; a live run takes the lock again after each reboot, which restarts the count.
    type: int
    default: 7200
  holder:
    description:
      - Who holds the lock, for the record and for refusal messages. Keys C(controller) (host name, or
        C(ansible-pull)), C(user), C(playbook), C(started) (when the run started, ISO 8601).
    type: dict
    default: {}
  wait:
    description: Seconds to wait for the holder unit to take the lock or to end.
    type: float
    default: 10
attributes:
  check_mode:
    description: Reports whether the lock is free and what would be done; starts and stops nothing.
    support: full
  diff_mode:
    description: Nothing to diff.
    support: none
"""

EXAMPLES = r"""
- name: Take the device lock for this run
  edgeslim.jetson.device_lock:
    run_id: 20261129T224821Z-1a2b3c
    holder:
      controller: ops-laptop
      user: alice
      playbook: slim
      started: "2026-11-29T22:48:21Z"

- name: Give it back
  edgeslim.jetson.device_lock:
    state: released
    run_id: 20261129T224821Z-1a2b3c
"""

RETURN = r"""
unit:
  description: The transient unit that holds (or held) the lock for O(run_id).
  returned: always
  type: str
  sample: edgeslim-lock-20261129T224821Z-1a2b3c.service
held:
  description: Whether this run holds the lock when the module returns.
  returned: always
  type: bool
record:
  description: The holder record written beside the lock (V(acquired)).
  returned: when the lock is held by this run
  type: dict
  sample: {run_id: 20261129T224821Z-1a2b3c, controller: ops-laptop, user: alice, playbook: slim,
           started: "2026-11-29T22:48:21Z", acquired: "2026-11-29T22:48:25Z", expires: "2026-11-30T00:48:25Z",
           ttl: 7200, unit: edgeslim-lock-20261129T224821Z-1a2b3c.service, pid: 4242,
           lock: /run/edgeslim/device.lock}
holder:
  description: The record of the run that holds the lock, when another run holds it (the module then fails).
  returned: on refusal
  type: dict
"""

import json
import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import devlock


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
                comm, ppid = devlock.parse_proc_stat(handle.read())
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            comms.append(comm)
    return comms


class Lock:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        p = module.params
        self.path = p["path"]
        self.record_path = devlock.record_path(self.path)
        self.run_id = p["run_id"]
        self.unit = devlock.unit_name(self.run_id)
        self.systemctl = module.get_bin_path("systemctl", required=True)

    def show(self, unit: str) -> dict:
        rc, out, _err = self.module.run_command(
            [self.systemctl, "show", "-p", "LoadState", "-p", "ActiveState", "-p", "MainPID", unit]
        )
        return devlock.parse_show(out) if rc == 0 else {}

    def state(self, unit: str) -> tuple:
        show = self.show(unit)
        pid = int(show.get("MainPID") or 0)
        return devlock.holder_state(show, child_comms(pid)), pid

    def probe(self) -> bool:
        """True when another process holds the lock (flock for an instant, released again at once)."""
        if not os.path.exists(self.path):
            return False
        flock = self.module.get_bin_path("flock", required=True)
        rc, _out, err = self.module.run_command(devlock.probe_argv(flock, self.path))
        if rc not in (0, devlock.BUSY_EXIT):
            self.module.fail_json(msg=f"flock {self.path} failed (rc {rc}): {err.strip()}", held=False)
        return rc == devlock.BUSY_EXIT

    def refuse(self) -> None:
        record = read_record(self.record_path)
        live = bool(record.get("unit")) and self.state(record["unit"])[0] == "held"
        self.module.fail_json(
            msg=devlock.busy_message(self.path, record, live), unit=self.unit, held=False, holder=record or None
        )

    def keep_record(self, pid: int) -> dict:
        """The record of this run's lock; rewritten when missing or someone else's (a stale one)."""
        record = read_record(self.record_path)
        if record.get("run_id") == self.run_id and record.get("pid") == pid:
            return record
        p = self.module.params
        record = devlock.new_record(self.run_id, p["holder"] or {}, self.path, p["ttl"], pid)
        write_record(self.record_path, record)
        return record

    def acquire(self) -> None:
        p = self.module.params
        state, pid = self.state(self.unit)
        if state == "held":
            record = {} if self.module.check_mode else self.keep_record(pid)
            self.module.exit_json(changed=False, unit=self.unit, held=True, record=record)
        if state == "pending":
            self.module.fail_json(
                msg=f"{self.unit} is running but has not taken {self.path}; stop it first", held=False
            )
        if self.probe():
            self.refuse()
        if self.module.check_mode:
            self.module.exit_json(changed=True, unit=self.unit, held=False)

        os.makedirs(os.path.dirname(self.path) or "/", mode=0o755, exist_ok=True)
        systemd_run = self.module.get_bin_path("systemd-run", required=True)
        flock = self.module.get_bin_path("flock", required=True)
        argv = devlock.holder_argv(systemd_run, flock, self.path, self.run_id, p["ttl"])
        rc, _out, err = self.module.run_command(argv)
        if rc != 0:
            self.module.fail_json(msg=f"could not start {self.unit}: {err.strip()}", cmd=argv, held=False)

        deadline = time.monotonic() + p["wait"]
        while True:
            state, pid = self.state(self.unit)
            if state == "held":
                record = self.keep_record(pid)
                self.module.exit_json(changed=True, unit=self.unit, held=True, record=record)
            if state == "ended":
                break
            if time.monotonic() >= deadline:
                self.module.run_command([self.systemctl, "stop", self.unit])
                self.module.fail_json(
                    msg=f"{self.unit} neither took {self.path} nor ended within {p['wait']}s; stopped it",
                    held=False,
                )
            time.sleep(0.1)

        # The unit ended without the lock. Its exit status is gone (--collect), so ask the lock itself.
        if self.probe():
            self.refuse()
        self.module.fail_json(
            msg=f"{self.unit} ended without taking {self.path} although the lock is free; "
            f"see journalctl -u {self.unit}",
            held=False,
        )

    def release(self) -> None:
        state, _pid = self.state(self.unit)
        changed = state != "ended"
        if changed and not self.module.check_mode:
            rc, _out, err = self.module.run_command([self.systemctl, "stop", self.unit])
            if rc != 0:
                self.module.fail_json(msg=f"could not stop {self.unit}: {err.strip()}", held=True)
        if not self.module.check_mode and read_record(self.record_path).get("run_id") == self.run_id:
            os.unlink(self.record_path)
            changed = True
        self.module.exit_json(changed=changed, unit=self.unit, held=False)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["acquired", "released"], "default": "acquired"},
            "run_id": {"type": "str", "required": True},
            "path": {"type": "path", "default": devlock.DEFAULT_PATH},
            "ttl": {"type": "int", "default": devlock.DEFAULT_TTL},
            "holder": {"type": "dict", "default": {}},
            "wait": {"type": "float", "default": 10},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        devlock.check_run_id(p["run_id"])
    except devlock.LockError as exc:
        module.fail_json(msg=str(exc), held=False)
    if p["ttl"] <= 0 or p["wait"] <= 0:
        module.fail_json(msg=f"ttl and wait must be > 0 seconds (ttl {p['ttl']}, wait {p['wait']})", held=False)
    if not os.path.isabs(p["path"]):
        module.fail_json(msg=f"path must be absolute, got {p['path']}", held=False)
    lock = Lock(module)
    if p["state"] == "acquired":
        lock.acquire()
    else:
        lock.release()


if __name__ == "__main__":
    main()
