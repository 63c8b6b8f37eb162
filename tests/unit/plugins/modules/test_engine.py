"""edgeslim.jetson.engine (device module): probe is read-only and sees what the role's tasks saw; apply journals,
changes, verifies, measures with an adaptive settle and restores everything on a failure after the first change."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import hostguards
from ansible_collections.edgeslim.jetson.plugins.modules import engine
from conftest import FIXTURES
from fake_systemd import FakeSystemd, FakeUnit, jetson_units
from modhelper import run_module

MEMINFO = (FIXTURES / "meminfo" / "orin-nano-r36.txt").read_text()
BASE_AVAILABLE = 5990172
# PSS (kB) the fake device's running units hold; stopping one frees it (MemAvailable rises by as much)
MEMORY_KB = {
    "gdm.service": 102400,
    "gnome-session-desktop.service": 691200,
    "avahi-daemon.service": 1200,
    "ModemManager.service": 4000,
    "nvargus-daemon.service": 15564,
    "bluetooth.service": 1900,
    "packagekit.service": 87040,
    "rpcbind.service": 900,
}
WAREHOUSE = {
    "mask": ["gdm3", "packagekit", "nvargus-daemon"],
    "disable": ["avahi-daemon", "ModemManager", "bluetooth", "rpcbind"],
    "protected": ["ssh.service", "nvgetty.service"],
    "default_target": "multi-user.target",
    "selected_blocks": ["headless", "no_camera", "lean_network"],
}
IP_ETH0 = (
    "2: eth0    inet 10.88.0.5/16 brd 10.88.255.255 scope global eth0\\       valid_lft forever preferred_lft forever\n"
)
X11_SESSION = "Id=c2\nName=nvidia\nType=x11\nClass=user\nRemote=no\nActive=yes\nSeat=seat0\n"


class Device:
    """run_command of a simulated Jetson: systemctl (FakeSystemd), the unit-memory `systemctl show -p`, `ip`,
    `loginctl`, the boot-id command; /proc/meminfo follows the units that run."""

    def __init__(self, fake: FakeSystemd, meminfo: Path, sessions: str = "", ip_out: str = IP_ETH0) -> None:
        self.fake, self.meminfo, self.sessions, self.ip_out = fake, meminfo, sessions, ip_out
        self.calls: list[list[str]] = []
        self.restart_fails = 0  # how many journald restarts fail
        self.fail_verb: str | None = None
        self.write_meminfo()

    def write_meminfo(self) -> None:
        freed = sum(kb for name, kb in MEMORY_KB.items() if self.fake.units[name].active != "active")
        text = re.sub(r"MemAvailable:\s+\d+", f"MemAvailable:    {BASE_AVAILABLE + freed}", MEMINFO)
        self.meminfo.write_text(text)

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        rest = argv[1:]
        if argv[0] == "boot-id":
            return 0, "boot-1\n", ""
        if rest[:1] == ["-o"]:
            return 0, self.ip_out, ""
        if rest[:1] == ["list-sessions"]:
            return 0, "     c2 1000 nvidia seat0 tty2\n" if self.sessions else "", ""
        if rest[:1] == ["show-session"]:
            return 0, self.sessions, ""
        if rest[:2] == ["show", "-p"]:
            blocks = []
            for name in rest[3:]:
                unit = self.fake.get(name)
                running = unit is not None and unit.active == "active"
                current = MEMORY_KB.get(unit.id if unit else name, 0) * 1024 if running else 0
                blocks.append(
                    f"Id={unit.id if unit else name}\nControlGroup=\nMemoryCurrent={current or '[not set]'}\n"
                    f"ActiveState={unit.active if unit else 'inactive'}\n"
                    f"LoadState={'loaded' if unit else 'not-found'}\n"
                )
            return 0, "\n".join(blocks), ""
        if self.fail_verb in rest:
            return 1, "", f"Failed to {self.fail_verb} unit: Access denied\n"
        if rest[:1] == ["restart"]:
            if self.restart_fails:
                self.restart_fails -= 1
                return 1, "", "Job for systemd-journald.service failed.\n"
            return 0, "", ""
        res = self.fake(argv)
        self.write_meminfo()
        return res

    def verbs(self) -> list[str]:
        return [c[2] if c[1] == "--no-pager" else c[1] for c in self.calls if c[0] == "/bin/systemctl"]


@pytest.fixture(autouse=True)
def no_ssh(tmp_path, monkeypatch):
    """No ancestor has SSH_CONNECTION unless a test builds a process tree."""
    (tmp_path / "proc").mkdir()
    monkeypatch.setattr(hostguards, "PROC_ROOT", str(tmp_path / "proc"))


def device(tmp_path, units: list[FakeUnit] | None = None, **kw: Any) -> Device:
    return Device(FakeSystemd(units or jetson_units()), tmp_path / "meminfo", **kw)


def run(dev: Device, phase: str, services: dict | None, tmp_path, check: bool = False, **args: Any) -> dict:
    measure = {"interval": 0, "settle_timeout": 5, "samples": 3, "boot_id_command": ["boot-id"],
               "meminfo_path": str(dev.meminfo), **args.pop("measure", {})}  # fmt: skip
    full = {"phase": phase, "journal_path": str(tmp_path / "journal.json"), "measure": measure, **args}
    if services is not None:
        full["services"] = {"verify_delay": 0, "journald_dropin": str(tmp_path / "journald.conf.d/60-edgeslim.conf"),
                            **services}  # fmt: skip
    return run_module(engine.main, full, check=check, diff=True, run_command=dev, bin_path="/bin/systemctl")


def journal(tmp_path) -> dict:
    return json.loads((tmp_path / "journal.json").read_text())


def test_probe_is_read_only_and_returns_the_plan(tmp_path):
    dev = device(tmp_path)
    before = dev.fake.snapshot()
    res = run(dev, "probe", WAREHOUSE, tmp_path)
    assert res["changed"] is False and res["phase"] == "probe"
    assert dev.fake.snapshot() == before and not (tmp_path / "journal.json").exists()
    assert set(dev.verbs()) <= {"show", "get-default", "list-sessions", "show-session"}
    svc = res["services"]
    assert svc["changes"] is True
    assert svc["default_target"] == {"before": "graphical.target", "after": "multi-user.target"}
    assert "gnome-session-desktop.service" in svc["stopped"]
    assert svc["unit_memory"]["gdm.service"]["memory_kb"] == 102400
    assert svc["units"]["gdm.service"]["actions"] == ["mask"]
    assert "default.target: multi-user.target" in res["diff"][0]["after"]
    assert res["management"] is None and res["display"] == {"checked": True, "sessions_in_use": []}


def test_probe_reports_a_local_graphical_session(tmp_path):
    dev = device(tmp_path, sessions=X11_SESSION + "\nId=c1\nName=gdm\nType=x11\nClass=greeter\nRemote=no\n")
    res = run(dev, "probe", WAREHOUSE, tmp_path)
    assert res["display"]["sessions_in_use"] == [
        "Id=c2 Name=nvidia Type=x11 Class=user Remote=no Active=yes Seat=seat0"
    ]
    no_check = run(dev, "probe", {**WAREHOUSE, "check_display": False}, tmp_path)
    assert no_check["display"] == {"checked": False, "sessions_in_use": []}


def fake_proc(root: Path, tree: list[tuple[int, int, str, dict[str, str]]]) -> None:
    """Processes as the kernel shows them: /proc/<pid>/stat ("pid (comm) state ppid ...") and NUL-separated
    environ."""
    for pid, ppid, comm, env in tree:
        d = root / str(pid)
        d.mkdir()
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {ppid} 0 -1 4194560 1073 0 0 0 0 0 0 0 20 0 1 0\n")
        (d / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))


def test_probe_finds_the_management_link_through_sudo_and_protects_its_carriers(tmp_path, monkeypatch):
    """become = sudo drops SSH_CONNECTION: the module (pid = own) finds it in the user's shell above sudo."""
    root = tmp_path / "proc"
    me = os.getpid()
    fake_proc(
        root,
        [
            (1, 0, "systemd", {}),
            (700, 1, "sshd", {}),
            (810, 700, "sh", {"SSH_CONNECTION": "10.88.0.1 51234 10.88.0.5 22", "USER": "nvidia"}),
            (812, 810, "sudo", {"SSH_CONNECTION": "10.88.0.1 51234 10.88.0.5 22"}),
            (813, 812, "sh", {"USER": "root"}),
            (me, 813, "python3.10", {"USER": "root", "HOME": "/root"}),
        ],
    )
    dev = device(tmp_path)
    res = run(dev, "probe", {**WAREHOUSE, "disable": ["NetworkManager"]}, tmp_path)
    assert res["failed"] is True and res["stage"] == "plan"
    assert "carries the management link on eth0" in res["msg"]
    assert ["/bin/systemctl", "-o", "addr", "show", "to", "10.88.0.5"] in dev.calls
    ok = run(dev, "probe", WAREHOUSE, tmp_path)
    assert ok["management"] == {
        "address": "10.88.0.5",
        "interface": "eth0",
        "source": "SSH_CONNECTION of process 812 (sudo)",
    }


def test_probe_refuses_protected_units_before_any_change(tmp_path):
    dev = device(tmp_path)
    before = dev.fake.snapshot()
    res = run(dev, "probe", {"disable": ["ssh"]}, tmp_path)
    assert res["failed"] is True and res["changed"] is False and res["stage"] == "plan"
    assert "refusing to change anything: unit ssh.service is protected" in res["msg"]
    assert dev.fake.snapshot() == before


def test_apply_journals_changes_measures_and_returns_the_record(tmp_path):
    dev = device(tmp_path)
    res = run(dev, "apply", WAREHOUSE, tmp_path)
    assert res["changed"] is True, res
    assert dev.fake.state("gdm.service") == ("masked", "inactive")
    assert dev.fake.default_target == "multi-user.target"
    layer = journal(tmp_path)["layers"]["services"]
    assert layer["units"]["gdm.service"]["unit_file_state"] == "static"
    rec = res["services"]["record"]
    assert rec["status"] == "applied" and rec["measured_by"] == "MemAvailable"
    freed = sum(MEMORY_KB.values())
    assert rec["reclaimed_mb"] == round(freed / 1024, 1)
    assert rec["attributed_mb"] == round(freed / 1024, 1)
    d = rec["details"]
    assert d["attribution_mb"]["gdm.service"] == 100.0
    assert d["unit_memory"]["gdm.service"]["memory_kb"] == 102400
    assert d["blocks"] == ["headless", "no_camera", "lean_network"]
    assert d["boot_id"] == "boot-1" and d["check_mode"] is False
    assert d["settle"]["reason"] == "stable" and d["settle"]["readings"] == 3
    assert set(d) == {"check_mode", "blocks", "units", "stopped", "stopped_with", "stopped_with_mb", "absent",
                      "kept", "default_target", "attribution_mb", "unit_memory", "boot_id", "systemctl_calls",
                      "settle", "collateral"}  # fmt: skip
    # the session went down with gdm (PartOf=): collateral, journaled by name, warned about
    assert d["collateral"] == {
        "gnome-session-desktop.service": {"by": "gdm3.service", "via": "PartOf=", "state": "inactive"}
    }
    assert layer["collateral"] == ["gnome-session-desktop.service"]
    assert "gnome-session-desktop.service (PartOf= gdm3.service, now inactive)" in res["services"]["collateral_warning"]


def test_apply_twice_second_run_unchanged_without_measuring(tmp_path):
    dev = device(tmp_path)
    run(dev, "apply", WAREHOUSE, tmp_path)
    first = journal(tmp_path)
    dev.calls.clear()
    res = run(dev, "apply", WAREHOUSE, tmp_path)
    assert res["changed"] is False
    assert res["services"]["record"]["status"] == "unchanged"
    assert res["services"]["record"]["reclaimed_mb"] is None
    assert not any(c[0] == "boot-id" for c in dev.calls)
    assert journal(tmp_path) == first


def test_check_mode_apply_changes_nothing(tmp_path):
    dev = device(tmp_path)
    before = dev.fake.snapshot()
    res = run(dev, "apply", WAREHOUSE, tmp_path, check=True)
    assert dev.fake.snapshot() == before and not (tmp_path / "journal.json").exists()
    assert res["services"]["changes"] is True and "record" not in res["services"]


def test_journald_dropin_written_journaled_and_journald_restarted(tmp_path):
    dev = device(tmp_path)
    res = run(dev, "apply", {"journald": {"Storage": "volatile", "RuntimeMaxUse": "16M"}}, tmp_path)
    dropin = tmp_path / "journald.conf.d/60-edgeslim.conf"
    assert dropin.read_text().endswith("[Journal]\nRuntimeMaxUse=16M\nStorage=volatile\n")
    assert oct(dropin.stat().st_mode & 0o777) == "0o644"
    assert ["/bin/systemctl", "restart", "systemd-journald.service"] in dev.calls
    assert journal(tmp_path)["layers"]["services"]["journald_dropin"] == {"path": str(dropin), "previous": None}
    assert res["services"]["record"]["status"] == "applied"
    again = run(dev, "apply", {"journald": {"Storage": "volatile", "RuntimeMaxUse": "16M"}}, tmp_path)
    assert again["changed"] is False


def test_failure_after_a_change_restores_units_target_and_dropin(tmp_path):
    dev = device(tmp_path)
    before = dev.fake.snapshot()
    dev.restart_fails = 1  # journald restart fails after the units changed and the drop-in was written
    res = run(dev, "apply", {**WAREHOUSE, "journald": {"Storage": "volatile"}}, tmp_path)
    assert res["failed"] is True and res["changed"] is True and res["stage"] == "apply"
    assert "systemd-journald.service failed" in res["msg"]
    assert res["restored"] is True and res["restore_error"] == ""
    assert dev.fake.snapshot() == before
    assert not (tmp_path / "journald.conf.d/60-edgeslim.conf").exists()
    assert journal(tmp_path)["layers"] == {}


def test_failed_verification_restores(tmp_path):
    units = jetson_units(**{"ModemManager.service": {"stop_fails": True}})
    dev = device(tmp_path, units)
    before = dev.fake.snapshot()
    res = run(dev, "apply", WAREHOUSE, tmp_path)
    assert res["failed"] is True and res["restored"] is True
    assert "ModemManager.service failed" in res["msg"]
    assert dev.fake.snapshot() == before


def test_a_core_unit_going_down_as_collateral_is_restarted_at_once_and_fails_the_host(tmp_path):
    # systemd-logind exits when es-server stops (nothing in its unit says so): the apply restarts it at once, fails,
    # and the engine restores the rest from the journal
    units = [
        *jetson_units(),
        FakeUnit("es-server.service", takes_down=("systemd-logind.service",)),
        FakeUnit("systemd-logind.service", "static"),
    ]
    dev = device(tmp_path, units)
    before = dev.fake.snapshot()
    res = run(dev, "apply", {**WAREHOUSE, "disable": [*WAREHOUSE["disable"], "es-server"]}, tmp_path)
    assert res["failed"] is True and res["stage"] == "apply" and res["restored"] is True, res
    assert "protected unit went down as collateral of the batch: systemd-logind.service" in res["msg"]
    assert res["collateral_restarted"] == ["systemd-logind.service"]
    # restarted before the engine's restore ran (the named units come back only in the restore)
    calls = dev.fake.calls
    first_start = next(i for i, c in enumerate(calls) if c[1] == "start")
    assert calls[first_start] == ["/bin/systemctl", "start", "--", "systemd-logind.service"]
    assert dev.fake.snapshot() == before
    assert journal(tmp_path)["layers"] == {}


def test_failed_restore_keeps_the_journal_and_says_so(tmp_path):
    dev = device(tmp_path, jetson_units(**{"ModemManager.service": {"stop_fails": True}}))
    dev.fail_verb = "unmask"
    res = run(dev, "apply", WAREHOUSE, tmp_path)
    assert res["failed"] is True and res["restored"] is False
    assert "Access denied" in res["restore_error"]
    assert "units" in journal(tmp_path)["layers"]["services"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"measure": {"samples": 0}}, "measure.samples must be >= 1"),
        ({"measure": {"stable_kb": -1}}, "measure.stable_kb must be >= 0"),
        ({"services": {"journald": {"Storage\n": "x"}}}, "is not a [Journal] option name"),
        ({"services": {"journald": {"Storage": "a\nb"}}}, "must be one line"),
        ({"services": {"disable": ["bad name!"]}}, "invalid unit name"),
        ({"services": {"default_target": "rescue.target"}}, "default_target must be"),
        ({"profile": {"name": "x"}}, "resolved on the controller"),
    ],
)
def test_bad_input_refused_before_anything_runs(tmp_path, args, message):
    dev = device(tmp_path)
    before = dev.fake.snapshot()
    services = args.pop("services", {})
    res = run(dev, "apply", services, tmp_path, **args)
    assert res["failed"] is True and message in res["msg"], res
    assert dev.fake.snapshot() == before and not (tmp_path / "journal.json").exists()


def test_apply_reports_a_unit_that_ended_failed_and_units_stopped_unnamed(tmp_path):
    # through units_apply's defaults: the engine is unchanged and still gets bounded stops, the failed-unit warning
    # and the observed dependencies in its record
    units = [
        *jetson_units(),
        FakeUnit("es-stubborn.service", ignores_sigterm=True),
        FakeUnit("es-server.service", takes_down=("es-client.service",)),
        FakeUnit("es-client.service"),
    ]
    dev = device(tmp_path, units)
    services = {**WAREHOUSE, "disable": [*WAREHOUSE["disable"], "es-stubborn", "es-server"]}
    res = run(dev, "apply", services, tmp_path)
    assert res["changed"] is True, res
    d = res["services"]["record"]["details"]
    assert d["units"]["es-stubborn.service"]["stop_result"] == "failed"
    assert d["stopped_with"]["es-client.service"] == {"by": None, "via": "observed"}
    assert journal(tmp_path)["layers"]["services"]["units"]["es-client.service"]["via"] == "observed"
    assert "list-jobs" in dev.verbs()
    res = run(dev, "apply", services, tmp_path)  # a re-run: the failed unit is down and disabled, nothing to do
    assert res["changed"] is False, res
