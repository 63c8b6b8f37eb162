#!/usr/bin/env python
"""A controller that vanishes mid-run: run slim.yml against one simulated device, SIGKILL ansible-playbook and every
process under it (its workers, which Ansible puts in sessions of their own, and their connections) the moment the
engine's apply has armed the device's deadline, then leave the device alone and wait until it has restored the run by
itself.

    python tests/sim/controller_lost.py --container es-controller_lost-1 --inventory HOSTS --deadline 40

Nothing here restores anything: no rescue, no rollback playbook. The script only watches, through ``podman exec``:
the deadline record (``/var/lib/edgeslim/deadline/<run id>.json``) appears -> kill; then the record is gone and the
metrics file says ``rolled_back``. It fails when the run ends before the deadline was armed (nothing to prove), when
the device has not restored itself within the deadline plus --grace seconds, or when the kill came too late (the
playbook had already finished). The Molecule scenario controller_lost runs it and checks the device's state after
(docs/reliability.md, "The controller vanishes mid-run").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

RECORDS = "/var/lib/edgeslim/deadline"
METRICS = "/var/lib/node_exporter/textfile_collector/edgeslim.prom"
ROLLED_BACK = 'result="rolled_back"'


def device(container: str, script: str) -> str:
    return subprocess.run(["podman", "exec", container, "sh", "-c", script], capture_output=True, text=True,
                          check=False).stdout  # fmt: skip


def records(container: str) -> list[str]:
    return device(container, f"ls {RECORDS} 2>/dev/null | grep '\\.json$' || true").split()


def rolled_back(container: str) -> bool:
    """The metrics file's result line for rolled_back is 1 (the restore program wrote it)."""
    for line in device(container, f"cat {METRICS} 2>/dev/null || true").splitlines():
        if line.startswith("edgeslim_last_run_result{") and ROLLED_BACK in line:
            return line.rsplit(None, 1)[-1] == "1"
    return False


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc): a killpg misses Ansible's workers, each of which calls setsid()."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                stat = handle.read()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_controller(pid: int) -> None:
    """A crash of the controller machine: ansible-playbook stopped first (it forks no new worker), then it and every
    process under it killed."""
    os.kill(pid, signal.SIGSTOP)
    for _round in range(3):  # a worker may have forked a connection between the listing and its kill
        for child in descendants(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", required=True, help="the simulated device (podman container name)")
    parser.add_argument("--inventory", required=True, help="an inventory naming that device")
    parser.add_argument("--deadline", type=int, default=40, help="edgeslim_deadline for the run (seconds)")
    parser.add_argument("--grace", type=int, default=120, help="seconds past the deadline the restore may take")
    parser.add_argument("--log", default="slim-killed.log", help="where ansible-playbook's output goes")
    args = parser.parse_args()
    if args.deadline < 1:
        parser.error("--deadline must be at least 1 second")

    if records(args.container):
        print(f"FAIL a deadline record is already on {args.container} before the run", flush=True)
        return 1
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "slim.yml", "-i", args.inventory,
            "-e", json.dumps({"edgeslim_deadline": args.deadline, "edgeslim_reboot_ok": True})]  # fmt: skip
    start = time.monotonic()
    with open(args.log, "w", encoding="utf-8") as log:
        # a session of its own; kill_controller also takes the workers, which Ansible moves to sessions of their own
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while not records(args.container):
            if proc.poll() is not None:
                print(f"FAIL slim.yml ended (rc {proc.returncode}) before the deadline was armed; see {args.log}")
                return 1
            if time.monotonic() - start > 600:
                os.killpg(proc.pid, signal.SIGKILL)
                print("FAIL no deadline armed within 600 s")
                return 1
            time.sleep(0.2)
        if proc.poll() is not None:
            print(f"FAIL slim.yml had ended (rc {proc.returncode}) when its deadline record was seen: too late to kill")
            return 1
        kill_controller(proc.pid)
        proc.wait()
    armed = time.monotonic()
    print(f"deadline armed {armed - start:.1f} s into the run; controller killed (ansible-playbook and its workers)")

    limit = armed + args.deadline + args.grace
    while time.monotonic() < limit:
        if not records(args.container) and rolled_back(args.container):
            took = time.monotonic() - armed
            print(f"restored by the device {took:.1f} s after the kill (deadline {args.deadline} s)")
            return 0
        time.sleep(2)
    print(f"FAIL {args.container} did not restore itself within {args.deadline + args.grace} s of the kill: "
          f"records {records(args.container)}, rolled_back {rolled_back(args.container)}")  # fmt: skip
    return 1


if __name__ == "__main__":
    sys.exit(main())
