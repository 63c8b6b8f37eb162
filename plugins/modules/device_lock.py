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
  - V(released) stops the unit (the kernel releases the lock) and removes the record if it is this run's. It
    first disarms the deadline of the same run (the timer C(edgeslim-deadline-<run_id>.timer) and its record under
    O(journal_path)'s directory, that edgeslim.jetson.engine's apply armed), as the engine does when it gives the
    lock back itself, so a rescue that restores the device under the lock and releases it leaves no timer that would
    restore it again later.
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
  journal_path:
    description:
      - The journal of the run (edgeslim.jetson.engine's O(edgeslim.jetson.engine#module:journal_path)); the run's
        deadline record is in its directory. Used by V(released) only.
    type: path
    default: /var/lib/edgeslim/journal.json
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
deadline:
  description:
    - What V(released) did to the run's deadline (edgeslim.jetson.engine's O(edgeslim.jetson.engine#module:deadline)).
      C(armed) false once disarmed, C(record_removed) when its record was removed, C(error) when its timer could not
      be stopped (also a warning; a timer that fires without its record does nothing). C(skipped) in check mode.
  returned: state is V(released)
  type: dict
  sample: {armed: false, unit: edgeslim-deadline-20261129T224821Z-1a2b3c.timer, record_removed: true}
holder:
  description: The record of the run that holds the lock, when another run holds it (the module then fails).
  returned: on refusal
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import deadline as dl
from ansible_collections.edgeslim.jetson.plugins.module_utils import devlock
from ansible_collections.edgeslim.jetson.plugins.module_utils.journal import DEFAULT_JOURNAL_PATH


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["acquired", "released"], "default": "acquired"},
            "run_id": {"type": "str", "required": True},
            "path": {"type": "path", "default": devlock.DEFAULT_PATH},
            "ttl": {"type": "int", "default": devlock.DEFAULT_TTL},
            "holder": {"type": "dict", "default": {}},
            "wait": {"type": "float", "default": 10},
            "journal_path": {"type": "path", "default": DEFAULT_JOURNAL_PATH},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        lock = devlock.DeviceLock(module, p["path"], p["run_id"], p["ttl"], p["holder"], p["wait"], module.check_mode)
        result = lock.acquire() if p["state"] == "acquired" else dl.release_lock(module, lock, p["journal_path"])
    except devlock.LockError as exc:
        extra = {"held": False, **exc.extra}
        module.fail_json(msg=exc.msg, **extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
