#!/usr/bin/env python
"""The engine's deadline (plugins/module_utils/deadline.py) on a real systemd: one simulated device, the device's
own python3, no Ansible and no Molecule.

    python tests/sim/deadline_check.py --container es-dl-check-dl-001

On the controller it builds the restore program as the engine does (deadline.bundle) and copies it with this file
into the container; ``--device`` then runs there with the program's zip on sys.path (the module_utils the engine
runs, as AnsiballZ ships them) and checks, through systemctl and journalctl:

1. fire: the device lock taken for run A; a unit stopped and disabled through the units journal (plan, journal,
   arm, run: the engine's order); the deadline armed for 5 s (``arm``): the timer's properties and its service's
   ExecStart are the argv ``arm_argv`` builds, with the container's python3; the timer fires, the restore program
   runs from /usr/local/lib/edgeslim, puts the unit back (enabled, active), clears the journal layer, stops run A's
   lock holder and gives the lock back, writes the metrics file ``rolled_back``, removes the record, and both
   transient units are unloaded (``--collect``, ``RemainAfterElapse=no``: the same run id can be armed again);
2. disarm: a pending 60 s timer is stopped by ``disarm`` (arming again while it waits changes nothing), its record
   removed, and no service ran;
3. the rescue: ``release_lock`` (device_lock ``state: released``) stops run C's pending timer before it gives C's
   lock back.

Prints one line per check; exits 1 naming the first that failed. Bring a device up and down with fleet.py
(docs/reliability.md, "The controller vanishes mid-run").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

UNIT = "avahi-daemon.service"  # enabled and running on the simulated Orin Nano (roles' services profile: disable)
WORK = "/var/lib/edgeslim-deadline-check"
JOURNAL = WORK + "/journal.json"
LOCK = "/run/edgeslim/device.lock"
METRICS = WORK + "/metrics/edgeslim.prom"
REMOTE = "/tmp/edgeslim-deadline-check"


class CheckFailed(Exception):
    pass


# ---- on the device ---------------------------------------------------------------------------------------------
def device_checks(pyz: str) -> None:
    sys.path.insert(0, pyz)
    from ansible_collections.edgeslim.jetson.plugins.module_utils import deadline as dl
    from ansible_collections.edgeslim.jetson.plugins.module_utils import devlock
    from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j
    from ansible_collections.edgeslim.jetson.plugins.module_utils import units_apply as ua

    dev = dl.Device(log=lambda msg: None)
    systemctl = dev.get_bin_path("systemctl", required=True)

    def sh(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    def show(unit: str, *props: str) -> dict:
        out = sh(systemctl, "show", "-p", ",".join(props), unit)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def unit_state() -> tuple:
        return sh(systemctl, "is-enabled", UNIT).strip(), sh(systemctl, "is-active", UNIT).strip()

    def check(ok: bool, what: str, detail: object = "") -> None:
        if not ok:
            raise CheckFailed(f"{what}: {detail}")
        print(f"ok   {what}", flush=True)

    def wait_for(predicate, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.5)
        return predicate()

    def lock_free() -> bool:
        return subprocess.run(["flock", "--nonblock", LOCK, "true"], check=False).returncode == 0

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs(WORK, exist_ok=True)
    check(unit_state() == ("enabled", "active"), f"{UNIT} starts enabled and active", unit_state())

    # 1. fire
    run_a, seconds = f"dlcheck-{stamp}-fire", 5
    record = dl.record_path(JOURNAL, run_a)
    lock = devlock.DeviceLock(dev, LOCK, run_a, holder={"playbook": "deadline-check", "user": "check"})
    check(lock.acquire()["held"], f"device lock taken for run {run_a}")
    runner = ua.Runner(dev, systemctl)
    plan, result = ua.plan_units(runner, ua.UnitsRequest(disable=[UNIT]))
    ua.journal_plan(dev, runner, plan, JOURNAL, "services")
    check(UNIT in (j.load_journal(JOURNAL)["layers"].get("services") or {}).get("units", {}), "units journal written")
    metrics = {"path": METRICS, "playbook": "slim", "version": "0.0.0-check", "drift_check": False,
               "journal_path": JOURNAL}  # fmt: skip
    armed_at = time.monotonic()
    out = dl.arm(dev, run_a, seconds, JOURNAL, dl.PROGRAM_PATH,
                 dl.new_record(run_a, JOURNAL, LOCK, seconds, True, None, [], metrics))  # fmt: skip
    timer, service = dl.unit_name(run_a) + ".timer", dl.unit_name(run_a) + ".service"
    check(out["armed"] and out["changed"] and os.path.exists(record), "armed (record written, timer started)", out)
    props = show(timer, "ActiveState", "RemainAfterElapse", "AccuracyUSec", "Unit", "Description")
    check(props.get("ActiveState") == "active" and props.get("RemainAfterElapse") == "no"
          and props.get("AccuracyUSec") == "1s" and props.get("Unit") == service
          and props.get("Description") == f"edgeslim: deadline of run {run_a}", "timer properties", props)  # fmt: skip
    argv = dl.arm_argv("systemd-run", seconds, run_a, sys.executable, dl.PROGRAM_PATH, JOURNAL, record)
    command = argv[argv.index("--") + 1 :]
    exec_start = show(service, "ExecStart", "Description", "CollectMode")
    check(f"path={sys.executable} ;" in exec_start.get("ExecStart", "")
          and f"argv[]={' '.join(command)} ;" in exec_start.get("ExecStart", ""),
          f"the service runs {' '.join(command)}", exec_start)  # fmt: skip
    check(exec_start.get("CollectMode") == "inactive-or-failed", "the service is collected (--collect)", exec_start)
    check(os.path.exists(dl.PROGRAM_PATH) and sys.executable.startswith("/usr/bin/python3"),
          f"program {dl.PROGRAM_PATH}, interpreter {sys.executable}")  # fmt: skip
    ua.run_plan(runner, plan, result, JOURNAL, "services", 0.5)
    check(
        unit_state()[0] == "disabled" and unit_state()[1] != "active",
        f"{UNIT} stopped and disabled before the deadline ({time.monotonic() - armed_at:.1f} s)",
        unit_state(),
    )
    check(os.path.exists(record), "the record waits (the timer has not fired yet)")

    # 150 s: the restore's first step waits for `systemctl stop` of run A's lock holder. In the simulated device that
    # stop sometimes ends only at the unit's TimeoutStopSec (90 s, "State 'final-sigterm' timed out", no process left
    # to kill): the container's systemd misses the empty cgroup. A plain devlock acquire + release shows it too; the
    # restore completes then all the same.
    check(wait_for(lambda: not os.path.exists(record), 150), "the timer fired and the restore removed the record")
    done_after = time.monotonic() - armed_at
    check(done_after >= seconds - 1, f"restored after the deadline, not before ({done_after:.1f} s after arming)")
    check(wait_for(lambda: unit_state() == ("enabled", "active"), 20), f"{UNIT} enabled and active again",
          unit_state())  # fmt: skip
    log = sh("journalctl", "--no-pager", "-o", "cat", "-u", service)
    check("give the device lock back: ok" in log and "FAILED" not in log, "the restore program's log", log)
    check("services: ok" in log, "the services layer restored by the program", log)
    check(not (j.load_journal(JOURNAL)["layers"].get("services")), "the journal layer cleared")
    check(show(devlock.unit_name(run_a), "ActiveState").get("ActiveState") != "active", "run A's lock holder stopped")
    check(lock_free(), "the device lock is free")
    with open(METRICS, encoding="utf-8") as handle:
        prom = handle.read()
    check('edgeslim_last_run_result{playbook="slim",result="rolled_back"} 1' in prom, "metrics file rolled_back")
    check(wait_for(lambda: show(timer, "LoadState").get("LoadState") == "not-found"
                   and show(service, "LoadState").get("LoadState") == "not-found", 10),
          "timer and service unloaded", (show(timer, "LoadState"), show(service, "LoadState")))  # fmt: skip

    # 2. disarm
    run_b = f"dlcheck-{stamp}-disarm"
    rec_b = dl.new_record(run_b, JOURNAL, LOCK, 60, False, None, [], None)
    check(dl.arm(dev, run_b, 60, JOURNAL, dl.PROGRAM_PATH, rec_b)["changed"], "run B armed for 60 s")
    timer_b = dl.unit_name(run_b) + ".timer"
    check(show(timer_b, "ActiveState").get("ActiveState") == "active", "run B's timer waits")
    check(dl.arm(dev, run_b, 60, JOURNAL, dl.PROGRAM_PATH, None)["changed"] is False, "arming again changes nothing")
    out = dl.disarm(dev, run_b, JOURNAL)
    check(out.get("record_removed") and "error" not in out, "disarm", out)
    check(
        show(timer_b, "ActiveState").get("ActiveState") != "active", "run B's timer stopped", show(timer_b, "LoadState")
    )
    log_b = sh("journalctl", "--no-pager", "-o", "cat", "-u", dl.unit_name(run_b) + ".service")
    check("edgeslim deadline" not in log_b, "run B's restore never ran", log_b)

    # 3. the rescue's release
    run_c = f"dlcheck-{stamp}-rescue"
    lock_c = devlock.DeviceLock(dev, LOCK, run_c, holder={"playbook": "deadline-check"})
    lock_c.acquire()
    dl.arm(dev, run_c, 60, JOURNAL, dl.PROGRAM_PATH, dl.new_record(run_c, JOURNAL, LOCK, 60, False, None, [], None))
    out = dl.release_lock(dev, lock_c, JOURNAL)
    timer_c = dl.unit_name(run_c) + ".timer"
    check(out["held"] is False and out["deadline"].get("record_removed"), "release_lock", out)
    check(show(timer_c, "ActiveState").get("ActiveState") != "active" and lock_free(),
          "run C's timer stopped and its lock free")  # fmt: skip


def device_main(pyz: str) -> int:
    try:
        device_checks(pyz)
    except CheckFailed as exc:
        print(f"FAIL {exc}", flush=True)
        subprocess.run(["systemctl", "enable", "--now", UNIT], check=False)
        return 1
    print("deadline check: all ok", flush=True)
    return 0


# ---- on the controller -----------------------------------------------------------------------------------------
def controller_main(container: str) -> int:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(root, ".collections"))
    from ansible_collections.edgeslim.jetson.plugins.module_utils import deadline as dl

    with tempfile.TemporaryDirectory() as tmp:
        pyz = os.path.join(tmp, "deadline.pyz")
        with open(pyz, "wb") as handle:
            handle.write(dl.bundle())
        subprocess.run(["podman", "exec", container, "mkdir", "-p", REMOTE], check=True)
        for src in (pyz, os.path.abspath(__file__)):
            subprocess.run(["podman", "cp", src, f"{container}:{REMOTE}/"], check=True)
    argv = ["podman", "exec", container, "python3", f"{REMOTE}/deadline_check.py", "--device", "--pyz",
            f"{REMOTE}/deadline.pyz"]  # fmt: skip
    return subprocess.run(argv, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", help="the simulated device (podman container name)")
    parser.add_argument("--device", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pyz", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device:
        return device_main(args.pyz)
    if not args.container:
        parser.error("--container is required")
    return controller_main(args.container)


if __name__ == "__main__":
    sys.exit(main())
