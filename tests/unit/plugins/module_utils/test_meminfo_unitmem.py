"""meminfo and per-unit memory parsers on real formats, including malformed input."""

from __future__ import annotations

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import meminfo, unitmem
from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import UnitsError, parse_show
from conftest import FIXTURES

MEM = FIXTURES / "meminfo"


@pytest.mark.parametrize(
    ("name", "total", "nvmap"),
    [("orin-nano-r36.txt", 7802880, True), ("agx-orin-r36.txt", 64349184, True), ("thor-r38.txt", 128825804, False)],
)
def test_real_meminfo(name, total, nvmap):
    values = meminfo.select(meminfo.parse_meminfo((MEM / name).read_text()))
    assert values["MemTotal"] == total
    assert ("NvMapMemUsed" in values) is nvmap
    assert values["CmaTotal"] == 524288
    assert "HugePages_Total" not in values  # only the fields the snapshot reports
    assert meminfo.to_mib(values)["MemTotal"] == round(total / 1024, 1)


def test_truncated_and_foreign_files_are_refused():
    with pytest.raises(meminfo.MeminfoError, match="line 3"):
        meminfo.parse_meminfo((MEM / "truncated.txt").read_text(), "truncated.txt")
    with pytest.raises(meminfo.MeminfoError, match="missing MemAvailable"):
        meminfo.parse_meminfo("MemTotal: 1 kB\nMemFree: 1 kB\n")
    with pytest.raises(meminfo.MeminfoError, match="not 'Key: value kB'"):
        meminfo.parse_meminfo("processor\t: 0\n")


def test_median_and_spread():
    samples = [{"MemAvailable": v, "MemTotal": 10} for v in (100, 130, 90)]
    median, spread = meminfo.median_and_spread(samples)
    assert median == {"MemAvailable": 100, "MemTotal": 10}
    assert spread == {"MemAvailable": 40, "MemTotal": 0}
    with pytest.raises(meminfo.MeminfoError):
        meminfo.median_and_spread([])


SHOW = """Id=gdm.service
ControlGroup=/system.slice/gdm.service
MemoryCurrent=[not set]
ActiveState=active
LoadState=loaded

Id=nvargus-daemon.service
ControlGroup=/system.slice/nvargus-daemon.service
MemoryCurrent=15938355
ActiveState=active
LoadState=loaded

Id=nope.service
ControlGroup=
MemoryCurrent=[not set]
ActiveState=inactive
LoadState=not-found
"""


def make_cgroup(tmp_path, layout: str, cg: str, pids: dict[str, list[int]]):
    base = tmp_path / "cgroup" / layout if layout else tmp_path / "cgroup"
    for sub, plist in pids.items():
        d = base / cg.lstrip("/") / sub
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text("".join(f"{p}\n" for p in plist))
    return str(tmp_path / "cgroup")


def make_proc(tmp_path, pss: dict[int, int]):
    for pid, kb in pss.items():
        d = tmp_path / "proc" / str(pid)
        d.mkdir(parents=True)
        (d / "smaps_rollup").write_text(
            f"00400000-7ffd [rollup]\nRss: {kb + 100} kB\nPss: {kb} kB\nPss_Anon: {kb} kB\n"
        )
    return str(tmp_path / "proc")


def test_parse_show_blocks():
    blocks = parse_show(SHOW)
    assert [b["Id"] for b in blocks] == ["gdm.service", "nvargus-daemon.service", "nope.service"]
    with pytest.raises(UnitsError):
        parse_show("garbage line\n")


@pytest.mark.parametrize("layout", ["", "systemd"])  # cgroup v2 (unified) and v1 (systemd hierarchy)
def test_pss_sum_over_the_group_and_its_children(tmp_path, layout):
    cg_root = make_cgroup(tmp_path, layout, "/system.slice/gdm.service", {"": [10], "session-c1.scope": [11, 12]})
    proc = make_proc(tmp_path, {10: 1000, 11: 2000, 12: 500})
    props = parse_show(SHOW)[0]
    mem = unitmem.unit_memory(props, cgroup_root=cg_root, proc_root=proc)
    assert (mem.memory_kb, mem.source, mem.pids) == (3500, "pss", 3)


def test_memory_current_wins_when_set(tmp_path):
    props = parse_show(SHOW)[1]
    mem = unitmem.unit_memory(props, cgroup_root=str(tmp_path), proc_root=str(tmp_path))
    assert (mem.memory_kb, mem.source) == (15938355 // 1024, "memory_current")


def test_exited_process_counts_zero(tmp_path):
    cg_root = make_cgroup(tmp_path, "", "/system.slice/gdm.service", {"": [10, 99]})
    proc = make_proc(tmp_path, {10: 700})
    mem = unitmem.unit_memory(parse_show(SHOW)[0], cgroup_root=cg_root, proc_root=proc)
    assert mem.memory_kb == 700 and mem.pids == 2
