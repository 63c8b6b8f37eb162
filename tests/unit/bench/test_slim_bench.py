"""The benchmark's pure parts: the counting callback's classification and the Markdown table (host Python)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cb = _load("bench_roundtrips", ROOT / "bench" / "callback_plugins" / "roundtrips.py")
sb = _load("bench_slim_bench", ROOT / "bench" / "slim_bench.py")


@pytest.mark.parametrize(
    ("action", "delegated", "controller"),
    [
        ("ansible.builtin.set_fact", None, True),
        ("ansible.builtin.validate_argument_spec", None, True),
        ("set_stats", None, True),
        ("ansible.builtin.assert", None, True),
        ("edgeslim.jetson.units", None, False),
        ("ansible.builtin.command", None, False),
        ("ansible.builtin.reboot", None, False),
        # dtc on the controller: delegated to the implicit localhost, local connection
        ("ansible.builtin.command", {"ansible_delegated_host": "localhost", "ansible_connection": "local"}, True),
        ("ansible.builtin.tempfile", {"ansible_delegated_host": "localhost"}, True),
        # a simulated device reached over SSH on 127.0.0.1 is a device, delegated or not
        (
            "ansible.builtin.command",
            {"ansible_delegated_host": "robot-2", "ansible_host": "127.0.0.1", "ansible_connection": "ssh"},
            False,
        ),
        ("ansible.builtin.stat", {"ansible_delegated_host": "localhost", "ansible_connection": "ssh"}, False),
    ],
)
def test_classification(action, delegated, controller):
    assert cb.is_controller_side(action, delegated) is controller


def test_device_runs_counts_loop_items_not_skipped():
    assert cb.device_runs({"changed": True}) == 1
    assert cb.device_runs({"skipped": True}) == 0
    assert cb.device_runs({"results": [{"changed": True}, {"skipped": True}, {"changed": False}]}) == 2


def test_device_runs_counts_the_engine_phases_that_ran():
    engine = "edgeslim.jetson.engine"
    assert cb.device_runs({"probe": {"phase": "probe"}, "apply": None}, engine) == 1
    assert cb.device_runs({"probe": {}, "apply": {}}, engine) == 2
    assert cb.device_runs({"probe": {}, "finish": {}, "apply": None}, engine) == 2
    assert cb.device_runs({"verify": {}}, engine) == 1
    # the reboot the engine task makes itself is one device run: probe, apply, reboot, verify
    assert cb.device_runs({"probe": {}, "apply": {}, "verify": {}, "rebooted": True}, engine) == 4
    assert cb.device_runs({"rollback": {}, "rebooted": True}, engine) == 2
    # refused on the controller before any device run
    assert cb.device_runs({"probe": None, "apply": None, "engine_failed": True}, engine) == 0
    assert cb.is_controller_side("edgeslim.jetson.rollout_guard", None) is True


def test_category():
    assert cb.category("edgeslim.jetson.memory_snapshot", {"settle": 5}, False) == "settle"
    assert cb.category("edgeslim.jetson.memory_snapshot", {"settle": 0}, False) == "device"
    assert cb.category("ansible.builtin.command", {"argv": ["systemctl", "set-default", "x"]}, False) == "systemd"
    assert cb.category("ansible.builtin.command", {"_raw_params": "/bin/systemctl disable --now a"}, False) == "systemd"
    assert cb.category("edgeslim.jetson.units", {}, False) == "systemd"
    assert cb.category("ansible.builtin.command", {"argv": ["free", "-m"]}, False) == "device"
    assert cb.category("ansible.builtin.set_fact", {}, True) == "controller"


class _Obj(SimpleNamespace):
    def get_name(self):
        return self.name


def _result(host, action, uuid, res, name=None, args=None):
    return SimpleNamespace(
        _task=_Obj(action=action, _uuid=uuid, name=name or uuid, args=args or {}), _host=_Obj(name=host), _result=res
    )


LOCAL = {"ansible_delegated_host": "localhost", "ansible_connection": "local"}


def test_callback_writes_per_host_counts(tmp_path, monkeypatch):
    out = tmp_path / "counts.json"
    monkeypatch.setenv("BENCH_ROUNDTRIPS_FILE", str(out))
    plugin = cb.CallbackModule()
    events = [
        ("ok", _result("h1", "ansible.builtin.validate_argument_spec", "t1", {})),
        ("ok", _result("h1", "edgeslim.jetson.units", "t2", {"changed": True})),
        ("ok", _result("h1", "ansible.builtin.systemd_service", "t3", {"results": [{}, {}, {"skipped": True}]})),
        ("ok", _result("h1", "ansible.builtin.command", "t4", {"_ansible_delegated_vars": LOCAL})),
        ("skipped", _result("h1", "ansible.builtin.command", "t5", {"skipped": True})),
        ("failed", _result("h2", "ansible.builtin.command", "t4", {"failed": True})),
    ]
    for kind, res in events:
        plugin.v2_runner_on_start(res._host, res._task)
        getattr(plugin, f"v2_runner_on_{kind}")(res)
    plugin.v2_playbook_on_stats(None)
    data = json.loads(out.read_text())
    h1, h2 = data["hosts"]["h1"], data["hosts"]["h2"]
    assert (h1["device"], h1["controller"]) == (3, 2)
    assert h1["by_action"] == {"units": 1, "systemd_service": 2}
    assert (h2["device"], h2["controller"]) == (1, 0)
    assert set(data["tasks"]["controller"]) == {"t1", "t4"}
    assert data["tasks"]["device"]["t4"]["runs"] == 1  # h2's run of the same task name reached its device


CATALOG = [
    {"name": "gdm.service", "kind": "sim", "size_mib": 100, "aliases": ["gdm3.service"]},
    {"name": "gnome-session-desktop.service", "kind": "sim", "size_mib": 675, "part_of": "gdm.service"},
    {"name": "nvargus-daemon.service", "kind": "sim", "size_mib": 15.2},
    {"name": "nvpmodel.service", "kind": "oneshot"},
    {"name": "avahi-daemon.service", "kind": "debian"},
    {"name": "NetworkManager.service", "kind": "sim", "size_mib": 12.8},
]


def test_known_mib():
    stopped = ["gdm3.service", "nvargus-daemon.service", "nvpmodel.service", "avahi-daemon.service", "absent.service"]
    # gdm through its alias, the session through PartOf=, avahi's measured memory; NetworkManager is not stopped
    assert sb.known_mib(CATALOG, stopped, 0.1, {"avahi-daemon.service": 2048}) == pytest.approx(
        (100 + 675 + 15.2) * 0.1 + 2.0
    )


def _row(playbook, first_s, rerun_s, reclaimed, known=100.0, batching="all", hosts=3):
    summary = {"device": 3.0, "controller": 10.0, "time_s": dict.fromkeys(sb.TIME_CATEGORIES, 1.0)}
    return {
        "hosts": hosts, "batching": batching, "playbook": playbook, "first_s": first_s, "rerun_s": rerun_s,
        "first": summary, "rerun": dict(summary, device=1.0), "reclaimed_mib": reclaimed, "known_mib": known,
        "cpu_first": 1.234, "cpu_rerun": 0.5,
    }  # fmt: skip


def test_render_table_speedups_and_error():
    rows = [_row("slim", 20.0, 10.0, 97.0), _row("naive", 100.0, 40.0, 101.0), _row("impatient", 10.0, 10.0, 99.0)]
    lines = sb.render_table(rows).splitlines()
    assert len(lines) == 2 + 3
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    slim = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert slim[:5] == ["3", "all", "slim", "20.0 s", "10.0 s"]
    assert slim[5] == "3.0, 1.0"
    assert slim[7] == "5.00x, 4.00x"  # naive 100 s / 20 s, 40 s / 10 s
    assert slim[8] == "0.50x, 1.00x"
    assert slim[10] == "-3.0 %"
    assert slim[11] == "-"  # no measured stop in this row
    assert slim[12] == "1.23, 0.50"
    naive = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert naive[7] == "1.00x, 1.00x"
    assert naive[10] == "+1.0 %"


def test_render_table_without_baselines():
    line = sb.render_table([_row("slim", 20.0, 10.0, None)]).splitlines()[2]
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[7] == cells[8] == cells[9] == cells[10] == "-"


def test_summarize_per_host_means_and_time_split():
    counts = {
        "hosts": {
            "a": {"device": 4, "controller": 10, "device_s": 8.0, "controller_s": 1.0, "by_action": {"units": 1}},
            "b": {"device": 2, "controller": 10, "device_s": 6.0, "controller_s": 3.0, "by_action": {"units": 1}},
        },
        "tasks": {
            "device": {"snap": {"runs": 2, "seconds": 12.0, "category": "settle"}},
            "controller": {"facts": {"runs": 20, "seconds": 4.0, "category": "controller"}},
        },
    }
    s = sb.summarize(counts, 2)
    assert (s["device"], s["controller"], s["controller_s"]) == (3.0, 10.0, 2.0)
    assert s["time_s"] == {"device": 0.0, "systemd": 0.0, "settle": 6.0, "controller": 2.0}
    assert s["top_tasks"][0]["task"] == "snap"
    assert s["by_action"] == {"units": 1.0}


def test_a_cell_without_its_rerun_shows_dashes_and_the_first_run_speedup():
    naive = dict(_row("naive", 100.0, None, 101.0), rerun=None, cpu_rerun=None)
    lines = sb.render_table([_row("slim", 20.0, 10.0, 97.0), naive]).splitlines()
    slim = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert slim[7] == "5.00x, -"  # naive's first run against slim's; no naive re-run to compare
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert cells[4] == "-" and cells[5] == "3.0, -" and cells[12] == "1.23, -"
    merged = sb.median_result([naive, dict(naive, first_s=120.0)])
    assert merged["first_s"] == 110.0 and merged["rerun_s"] is None


def test_the_error_against_the_measured_stop():
    row = dict(_row("slim", 20.0, 10.0, 107.0, known=100.9), stop_mib=107.7)
    cells = [c.strip() for c in sb.render_table([row]).splitlines()[2].split("|")[1:-1]]
    assert cells[9] == "107.0 (known 100.9, stop 107.7)"
    assert cells[10] == "+6.0 %" and cells[11] == "-0.6 %"


@pytest.mark.parametrize("layout", ["", "/unified", "/systemd"])
def test_anon_script_reads_the_unit_group_under_v2_hybrid_and_v1(tmp_path, layout):
    """The Debian daemons' memory is read wherever the host mounts the unit's group (the testbed's host is cgroup v1):
    Anonymous of every process in the group and its children, not Pss; a unit without a group counts 0."""
    cg = "/libpod_parent/libpod-x/system.slice/avahi-daemon.service"
    group = tmp_path / ("cg" + layout + cg)
    (group / "child").mkdir(parents=True)
    (group / "cgroup.procs").write_text("11\n")
    (group / "child" / "cgroup.procs").write_text("12\n")
    for pid, anon in (("11", 700), ("12", 300)):
        (tmp_path / "proc" / pid).mkdir(parents=True)
        (tmp_path / "proc" / pid / "smaps_rollup").write_text(f"Rss: 9000 kB\nPss: 5000 kB\nAnonymous: {anon} kB\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f'#!/bin/sh\n[ "$4" = avahi-daemon.service ] && echo "{cg}"\nexit 0\n')
    systemctl.chmod(0o755)
    script = sb.ANON_SCRIPT.replace('"$@"', "avahi-daemon.service cups.service")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CGROOT=str(tmp_path / "cg"),
               PROCROOT=str(tmp_path / "proc"))  # fmt: skip
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert sb.parse_unit_kb(out) == {"avahi-daemon.service": 1000, "cups.service": 0}


def test_merge_takes_the_median_of_every_invocations_repetitions():
    """--merge: the second repetition of a cell measured by another invocation counts in its median."""
    a = {"repetitions": [_row("slim", 100.0, 50.0, None), _row("naive", 400.0, None, None)]}
    b = {"repetitions": [_row("slim", 120.0, 70.0, None)]}
    merged = sb.merge_runs([a, b])
    slim, naive = merged["results"]
    assert (slim["playbook"], slim["first_s"], slim["rerun_s"], slim["reps"]) == ("slim", 110.0, 60.0, 2)
    assert (naive["first_s"], naive["reps"]) == (400.0, 1) and len(merged["repetitions"]) == 3
    with pytest.raises(SystemExit):
        sb.merge_runs([{"results": []}])
