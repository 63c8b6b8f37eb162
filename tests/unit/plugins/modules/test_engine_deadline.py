"""The run's deadline (module_utils/deadline.py): apply arms it right after the journal and before its first change,
the run that ends the run disarms it, and the restore program, run on what an apply whose controller vanished left,
restores what the roles' rollback restores, byte for byte."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_apply as ba
from ansible_collections.edgeslim.jetson.plugins.module_utils import deadline as dl
from ansible_collections.edgeslim.jetson.plugins.module_utils import devlock, hostguards
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j
from ansible_collections.edgeslim.jetson.plugins.modules import device_lock, engine
from bootdevice import Device, FakeLock, compiled
from modhelper import run_module

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "faults"))
import bootdevice
from faultlib import fs_restore, fs_snapshot

fake_lock_fixture = bootdevice.fake_lock_fixture  # pytest finds the fixture "fake_lock" of bootdevice.py here
tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here

SWIOTLB = {"slots": 2048}
CARVEOUTS = {"recipes": ["headless"], "fdt_method": "overlays"}
RUN_ID = "20261130T050000Z-abc123"
LOCK = {"run_id": RUN_ID, "path": "/run/edgeslim/device.lock", "holder": {"user": "alice"}}
TIMER = f"edgeslim-deadline-{RUN_ID}.timer"


class TimerDevice(Device):
    """The fake Jetson with transient timers: systemd-run starts one, ``stop`` ends it, ``show`` tells."""

    def __init__(self, tmp: Path, tree: Path) -> None:
        super().__init__(tmp, tree)
        self.timers: set[str] = set()
        self.moves = self.calls  # one timeline: systemctl/systemd-run calls and file renames, in order

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        if argv[1:2] == ["--unit"] and any(a.startswith("--on-active=") for a in argv):
            self.calls.append(list(argv))
            self.timers.add(argv[2] + ".timer")
            return 0, "", ""
        if argv[1:4] == ["show", "-p", "ActiveState"]:
            self.calls.append(list(argv))
            return 0, f"ActiveState={'active' if argv[4] in self.timers else 'inactive'}\n", ""
        if argv[1:2] == ["stop"]:
            self.timers.discard(argv[2])
        return super().__call__(argv)


@pytest.fixture
def device(tmp_path, tree, fake_lock) -> TimerDevice:
    return TimerDevice(tmp_path, tree)


def metrics(device: Device) -> dict[str, Any]:
    return {"path": str(device.tmp / "metrics" / "edgeslim.prom"), "version": "9.9.9", "journal_path": device.journal}


def boot_request(device: Device) -> dict[str, Any]:
    probe = device.run("probe", device.boot(carveouts=CARVEOUTS))
    assert not probe.get("failed"), probe.get("msg")
    dtbo = compiled(probe["boot"]["carveouts"]["dts"], device.tmp)
    return device.boot(swiotlb=SWIOTLB, carveouts={**CARVEOUTS, "dtbo_b64": dtbo})


def is_arm(argv: list[Any]) -> bool:
    return any(str(a).startswith("--on-active=") for a in argv)


def order_violations(device: Device, timeline: list[Any]) -> list[str]:
    """The deadline must be armed after the journal is written and before the first boot file or extlinux.conf."""
    arm = [i for i, e in enumerate(timeline) if isinstance(e, list) and is_arm(e)]
    if not arm:
        return ["the deadline was never armed"]
    journal = [i for i, e in enumerate(timeline) if e == device.journal]
    boot = str(device.root / "boot")
    changes = [i for i, e in enumerate(timeline) if isinstance(e, str) and e.startswith(boot)]
    found = []
    if not journal or journal[0] > arm[0]:
        found.append("the deadline was armed before the journal was written")
    if changes and changes[0] < arm[0]:
        found.append(f"{timeline[changes[0]]} changed before the deadline was armed")
    return found


def test_apply_arms_the_deadline_before_its_first_change_and_finish_disarms_it(device):
    boot = boot_request(device)
    device.calls.clear()
    res = device.run("apply", boot, lock=LOCK, finish="no", metrics=metrics(device))
    assert res["changed"] and not res.get("failed"), res.get("msg")
    assert order_violations(device, device.calls) == []
    arm = next(e for e in device.calls if isinstance(e, list) and e[1:3] == ["--unit", f"edgeslim-deadline-{RUN_ID}"])
    assert "--on-active=1800" in arm and arm[-6:] == ["--journal", device.journal, "--run-id", RUN_ID, "--record",
                                                      dl.record_path(device.journal, RUN_ID)]  # fmt: skip
    assert res["deadline"]["armed"] and device.timers == {TIMER}
    record = json.loads(Path(dl.record_path(device.journal, RUN_ID)).read_text())
    assert record["boot_layers"] == ["swiotlb", "carveouts"] and record["services"] is False
    assert "program" not in record["boot"]["checker"] and record["metrics"]["version"] == "9.9.9"
    program = zipfile.ZipFile(str(device.etc / "lib/edgeslim-deadline.pyz"))
    assert "ansible_collections/edgeslim/jetson/plugins/module_utils/extlinux_edit.py" in program.namelist()
    assert "__main__.py" in program.namelist()

    # arming again in the same boot (the same run id) keeps the timer that waits
    again = dl.arm(_Module(device), RUN_ID, 1800, device.journal, str(device.etc / "lib/edgeslim-deadline.pyz"), None)
    assert again["changed"] is False and device.timers == {TIMER}

    # the run ends (the finish run): the timer is stopped, the record removed, and the lock given back after it
    done = device.run("finish", None, lock=LOCK, metrics={**metrics(device), "result": "ok"})
    assert done["finished"] and device.timers == set() and done["deadline"]["record_removed"]
    assert not Path(dl.record_path(device.journal, RUN_ID)).exists()


def test_the_rescue_releasing_the_lock_disarms_the_deadline_of_its_run(device):
    """A failure that left the lock held for the caller's rescue leaves the deadline armed; the rescue gives the lock
    back with edgeslim.jetson.device_lock (roles/slim/tasks/lock_release.yml), which disarms the run's deadline
    first: no timer is left to restore the device again later."""
    boot = boot_request(device)
    res = device.run("apply", boot, lock=LOCK, finish="no", metrics=metrics(device))
    assert res["deadline"]["armed"] and device.timers == {TIMER}
    other = "edgeslim-deadline-20261130T060000Z-def456.timer"
    device.timers.add(other)  # another run's deadline: not this release's
    device.calls.clear()
    FakeLock.reset()
    released = run_module(device_lock.main, {"state": "released", "run_id": RUN_ID, "path": LOCK["path"],
                                             "journal_path": device.journal}, run_command=device,
                          bin_path="/bin/systemctl")  # fmt: skip
    assert not released.get("failed"), released.get("msg")
    assert device.timers == {other} and released["deadline"]["record_removed"]
    assert not Path(dl.record_path(device.journal, RUN_ID)).exists()
    assert FakeLock.log == ["released"] and FakeLock.units == [devlock.unit_name(RUN_ID)]
    # the timer stopped before the lock went (a timer firing in between would restore a device whose run ended)
    assert ["/bin/systemctl", "stop", TIMER] in device.calls

    # in check mode the release disarms nothing
    device.timers.add(TIMER)
    checked = run_module(device_lock.main, {"state": "released", "run_id": RUN_ID, "path": LOCK["path"],
                                            "journal_path": device.journal}, check=True, run_command=device,
                         bin_path="/bin/systemctl")  # fmt: skip
    assert checked["deadline"] == {"armed": None, "skipped": "check mode"} and TIMER in device.timers


def test_without_a_lock_or_with_deadline_0_nothing_is_armed(device):
    boot = boot_request(device)
    res = device.run("apply", boot, lock=LOCK, deadline=0, finish="no")
    assert res["changed"] and "deadline" not in res and device.timers == set()
    bad = device.run("apply", boot, lock=LOCK, deadline=-1)
    assert bad["failed"] and bad["stage"] == "input" and "deadline must be >= 0" in bad["msg"]


def test_a_deadline_that_cannot_be_armed_restores_the_boot_layers_before_failing(device, monkeypatch):
    boot = boot_request(device)
    before = fs_snapshot(str(device.root))
    monkeypatch.setattr(dl, "arm_argv", lambda *a: ["/bin/false-systemd-run"])
    real = device.__call__
    monkeypatch.setattr(TimerDevice, "__call__", lambda self, argv: (1, "", "no bus") if argv == [
        "/bin/false-systemd-run"] else real(argv))  # fmt: skip
    res = device.run("apply", boot, lock=LOCK, finish="no")
    assert res["failed"] and res["restored"] and "could not arm the deadline" in res["msg"], res.get("msg")
    after = fs_snapshot(str(device.root))
    assert {k: v for k, v in after.items() if ".edgeslim-" not in k} == before


class _Module:
    """What deadline.arm/disarm and the restore program take, on the fake device."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.warnings: list[str] = []

    def run_command(self, argv: list[str], **_k: Any) -> tuple[int, str, str]:
        return self.device(argv)

    def get_bin_path(self, name: str, required: bool = False) -> str:
        return "/bin/systemctl"

    def atomic_move(self, src: str, dest: str) -> None:
        dl.Device.atomic_move(self, src, dest)  # type: ignore[arg-type]

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


class RestoreDevice(_Module):
    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self.lines: list[str] = []

    def log(self, msg: str) -> None:
        self.lines.append(msg)


def rollback(device: Device, boot: dict[str, Any]) -> None:
    """The roles' rollback (roles/boot_commit/tasks/rollback.yml): the engine's rollback phase."""
    res = device.run("rollback", boot, layers=["swiotlb", "carveouts"])
    assert not res.get("failed"), res.get("msg")
    assert {rec["status"] for rec in res["records"].values()} == {"rolled_back"}, res["records"]


def comparable(snap: dict[str, Any]) -> dict[str, Any]:
    """Everything but extlinux.conf's timestamped backups, the deadline program and the metrics file."""
    return {k: v for k, v in snap.items() if "extlinux.conf.edgeslim-" not in k and "edgeslim-deadline" not in k
            and not k.startswith("metrics") and not k.startswith("var/deadline")}  # fmt: skip


def journal_layers(device: Device) -> dict[str, Any]:
    return j.load_journal(device.journal)["layers"]


def test_the_restore_program_restores_what_the_rollback_restores(device, monkeypatch):
    original = fs_snapshot(str(device.tmp))
    boot = boot_request(device)
    res = device.run("apply", boot, lock=LOCK, finish="no", metrics=metrics(device))
    assert res["changed"] and not res.get("failed"), res.get("msg")
    assert device.conf.read_bytes() != original["root/boot/extlinux/extlinux.conf"][2] and device.pending()
    left = fs_snapshot(str(device.tmp))  # the controller vanished here

    rollback(device, boot)
    by_rollback = fs_snapshot(str(device.tmp))
    fs_restore(str(device.tmp), left)
    device.enabled = True

    dev = RestoreDevice(device)
    device.calls.clear()
    rc = dl.main(["--journal", device.journal, "--run-id", RUN_ID, "--record", dl.record_path(device.journal, RUN_ID)],
                 dev=dev)  # fmt: skip
    assert rc == 0, dev.lines
    by_deadline = fs_snapshot(str(device.tmp))
    assert comparable(by_deadline) == comparable(by_rollback)
    assert by_deadline["root/boot/extlinux/extlinux.conf"] == original["root/boot/extlinux/extlinux.conf"]
    assert device.pending() == [] and not device.enabled and journal_layers(device) == {}
    # this run's lock holder stopped first, the lock taken under the deadline's name, given back at the end
    assert device.calls[0] == ["/bin/systemctl", "stop", devlock.unit_name(RUN_ID)]
    assert FakeLock.log == ["acquired", "released"]
    assert FakeLock.units == [devlock.unit_name(RUN_ID + "-deadline")] * 2
    prom = Path(metrics(device)["path"]).read_text()
    assert 'edgeslim_last_run_result{playbook="slim",result="rolled_back"} 1' in prom
    assert not Path(dl.record_path(device.journal, RUN_ID)).exists()
    assert not any("FAILED" in line for line in dev.lines) and any("carveouts: ok" in line for line in dev.lines)

    # fired after the run was disarmed (no record): nothing is done
    device.calls.clear()
    assert (
        dl.main(
            ["--journal", device.journal, "--run-id", RUN_ID, "--record", dl.record_path(device.journal, RUN_ID)],
            dev=dev,
        )
        == 0
    )
    assert device.calls == [] and "nothing to do" in dev.lines[-1]


def test_the_restore_program_runs_from_its_zip_on_a_plain_python(device, tmp_path):
    """The bundle imports on its own (no checkout on sys.path): the program the timer runs."""
    program = tmp_path / "p.pyz"
    program.write_bytes(dl.bundle())
    import subprocess

    out = subprocess.run([sys.executable, "-I", str(program), "--journal", str(tmp_path / "j.json"), "--run-id",
                          RUN_ID, "--record", str(tmp_path / "none.json")], capture_output=True, text=True,
                         check=False)  # fmt: skip
    assert out.returncode == 0 and "nothing to do" in out.stderr, out.stderr


def test_arming_after_the_journal_is_a_protection_the_order_check_sees(device, monkeypatch):
    """The order test fails when the deadline is armed after the boot files (the protection removed)."""
    boot = boot_request(device)
    real = ba.apply_boot

    def late(*args: Any, journaled: Any = None, **kwargs: Any) -> dict[str, Any]:
        done = real(*args, **kwargs)
        journaled()
        return done

    monkeypatch.setattr(engine.ba, "apply_boot", late)
    device.calls.clear()
    res = device.run("apply", boot, lock=LOCK, finish="no")
    assert res["changed"] and not res.get("failed"), res.get("msg")
    assert any("changed before the deadline was armed" in v for v in order_violations(device, device.calls))


# ---- the services path: on the fake systemd of the engine's services tests --------------------------------------
UNIT_CHANGES = {"stop", "disable", "mask", "unmask", "enable", "start", "restart", "set-default", "isolate", "kill"}


class ServicesTimeline:
    """test_engine's fake Jetson (FakeSystemd) with transient timers, and the journal and drop-in writes in the same
    timeline as the systemctl calls."""

    def __init__(self, tmp_path: Path) -> None:
        from test_engine import Device as ServicesDevice
        from test_engine import FakeSystemd, jetson_units

        self.dev = ServicesDevice(FakeSystemd(jetson_units()), tmp_path / "meminfo")
        self.meminfo = self.dev.meminfo
        self.timeline: list[Any] = []
        self.timers: set[str] = set()

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.timeline.append(list(argv))
        if is_arm(argv):
            self.timers.add(argv[argv.index("--unit") + 1] + ".timer")
            return 0, "", ""
        if argv[1:2] == ["reset-failed"]:
            return 0, "", ""
        if argv[1:4] == ["show", "-p", "ActiveState"] and argv[4].startswith(dl.UNIT_PREFIX):
            return 0, f"ActiveState={'active' if argv[4] in self.timers else 'inactive'}\n", ""
        return self.dev(argv)


def services_apply(tmp_path: Path, monkeypatch: Any) -> tuple[ServicesTimeline, dict[str, Any], list[str]]:
    from test_engine import WAREHOUSE
    from test_engine import run as run_services

    (tmp_path / "proc").mkdir()
    monkeypatch.setattr(hostguards, "PROC_ROOT", str(tmp_path / "proc"))
    monkeypatch.setattr(engine.devlock, "DeviceLock", FakeLock)
    device = ServicesTimeline(tmp_path)
    real_move = engine.AnsibleModule.atomic_move

    def move(module: Any, src: str, dest: str, *a: Any, **k: Any) -> None:
        device.timeline.append(dest)
        real_move(module, src, dest, *a, **k)

    monkeypatch.setattr(engine.AnsibleModule, "atomic_move", move)
    res = run_services(device, "apply", WAREHOUSE, tmp_path, lock=LOCK, finish="no",
                       deadline_program_path=str(tmp_path / "edgeslim-deadline.pyz"))  # fmt: skip
    return device, res, [str(tmp_path / "journal.json"), str(tmp_path / "journald.conf.d/60-edgeslim.conf")]


def services_order_violations(timeline: list[Any], journal: str, dropin: str) -> list[str]:
    """Armed after the services journal is written and before the first systemctl call that changes a unit (and
    before the journald drop-in)."""
    arm = [i for i, e in enumerate(timeline) if isinstance(e, list) and is_arm(e)]
    if not arm:
        return ["the deadline was never armed"]
    written = [i for i, e in enumerate(timeline) if e == journal]
    changes = [i for i, e in enumerate(timeline) if e == dropin or (
        isinstance(e, list) and e[0].endswith("systemctl") and not is_arm(e)
        and next((a for a in e[1:] if not a.startswith("-")), None) in UNIT_CHANGES)]  # fmt: skip
    found = []
    if not written or written[0] > arm[0]:
        found.append("the deadline was armed before the services journal was written")
    if not changes:
        found.append("no unit was changed")
    elif changes[0] < arm[0]:
        found.append(f"{timeline[changes[0]]} ran before the deadline was armed")
    return found


def test_services_apply_arms_after_its_journal_and_before_the_first_unit_change(tmp_path, monkeypatch):
    device, res, (journal, dropin) = services_apply(tmp_path, monkeypatch)
    assert res["changed"] and not res.get("failed"), res.get("msg")
    assert res["deadline"]["armed"] and device.timers == {TIMER}
    assert services_order_violations(device.timeline, journal, dropin) == []
    record = json.loads(Path(dl.record_path(journal, RUN_ID)).read_text())
    assert record["services"] is True and record["boot_layers"] == [] and record["boot"] is None
    # the deadline's own systemctl calls (show, reset-failed) are not unit changes, and the stop calls came after it
    arm = next(i for i, e in enumerate(device.timeline) if isinstance(e, list) and is_arm(e))
    assert any(isinstance(e, list) and "stop" in e for e in device.timeline[arm:])


def test_arming_the_services_deadline_late_is_seen_by_the_order_check(tmp_path, monkeypatch):
    """The services order check fails when the deadline is armed after the units changed (the protection removed)."""
    real_arm, real_run_plan = engine.arm_deadline, engine.ua.run_plan
    deferred: list[Any] = []

    def arm_later(module: Any, out: dict[str, Any], services: bool = False, **kw: Any) -> None:
        if services:
            deferred.append(lambda: real_arm(module, out, services=True, **kw))
        else:
            real_arm(module, out, services=services, **kw)

    def run_plan_then_arm(*args: Any, **kwargs: Any) -> Any:
        done = real_run_plan(*args, **kwargs)
        for late in deferred:
            late()
        return done

    monkeypatch.setattr(engine, "arm_deadline", arm_later)
    monkeypatch.setattr(engine.ua, "run_plan", run_plan_then_arm)
    device, res, (journal, dropin) = services_apply(tmp_path, monkeypatch)
    assert res["changed"] and not res.get("failed"), res.get("msg")
    assert any("ran before the deadline was armed" in v for v in services_order_violations(device.timeline, journal,
                                                                                           dropin))  # fmt: skip
