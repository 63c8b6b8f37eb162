"""swiotlb_info through main(): prepared debugfs directories, a fake kernel release, CPU list and command line."""

from __future__ import annotations

import os
from collections import namedtuple

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import swiotlb as tlb
from ansible_collections.edgeslim.jetson.plugins.modules import swiotlb_info
from conftest import swiotlb_debugfs as debugfs
from modhelper import run_module

Uname = namedtuple("Uname", "sysname nodename release version machine")


@pytest.fixture
def device(monkeypatch):
    """A device whose kernel, possible CPUs and /proc/cmdline the test sets."""
    state = {"release": "5.15.148-tegra", "cpus": "0-5\n", "cmdline": "root=/dev/nvme0n1p1 console=ttyTCU0,115200\n"}
    files = {"/proc/cmdline": "cmdline", tlb.CPU_POSSIBLE_PATH: "cpus"}
    monkeypatch.setattr(swiotlb_info, "read_text", lambda path: state[files[path]])
    monkeypatch.setattr(swiotlb_info.os, "uname", lambda: Uname("Linux", "jetson", state["release"], "#1", "aarch64"))
    return state


def test_r36_stock_pool_idle(tmp_path, device):
    path = debugfs(tmp_path, nslabs=32768, used=0)
    before = {f: os.stat(os.path.join(path, f)).st_mtime_ns for f in os.listdir(path)}
    res = run_module(swiotlb_info.main, {"debugfs_path": path}, check=True)
    assert res["changed"] is False and res["present"] is True
    assert (res["pool_slots"], res["pool_mib"], res["hiwater_slots"], res["samples"]) == (32768, 64.0, None, 1)
    assert (res["peak_slots"], res["peak_source"]) == (0, "io_tlb_used")
    assert res["recommendation"]["size_mib"] == 4 and res["recommendation"]["shrinks"] is True
    assert res["kernel"] == {"release": "5.15.148-tegra", "version": [5, 15], "possible_cpus": 6, "nareas": None}
    assert {f: os.stat(os.path.join(path, f)).st_mtime_ns for f in os.listdir(path)} == before  # read-only


def test_r38_hiwater_and_rounding(tmp_path, device):
    device.update(release="6.8.12-tegra", cpus="0-13\n", cmdline="root=PARTUUID=x swiotlb=3072\n")
    res = run_module(
        swiotlb_info.main,
        {"debugfs_path": debugfs(tmp_path, nslabs=4096, used=3, hiwater=900), "requested_slots": 3072},
    )
    assert (res["peak_slots"], res["peak_source"]) == (900, "io_tlb_used_hiwater")
    assert (res["expected_slots"], res["accepted"]) == (4096, True)  # 6.8 rounds 3072 up to 4096
    assert "power of two" in res["expected_rounding"]
    rec = res["recommendation"]  # 900 x 2 slots = 3.5 MiB -> the 4 MiB floor, 2048 slots on 16 areas
    assert (rec["size_mib"], rec["slots"], rec["kernel_slots"]) == (4, 2048, 2048)


def test_areas_field_counts_only_for_the_running_setting(tmp_path, device):
    device.update(release="6.8.12-tegra", cmdline="swiotlb=2048,32\n")
    path = debugfs(tmp_path, nslabs=4096, used=0, hiwater=0)
    assert run_module(swiotlb_info.main, {"debugfs_path": path, "requested_slots": 2048})["expected_slots"] == 4096
    # The role writes swiotlb=<slots> only: for another count the areas come from the CPUs (6 -> 8 areas)
    assert run_module(swiotlb_info.main, {"debugfs_path": path, "requested_slots": 1024})["expected_slots"] == 1024


def test_no_debugfs_uses_the_kernel_log_figure(tmp_path, device):
    res = run_module(
        swiotlb_info.main, {"debugfs_path": str(tmp_path / "none"), "requested_slots": 2048, "pool_log_mib": 4}
    )
    assert res["present"] is False and res["peak_slots"] is None and res["recommendation"] is None
    assert res["accepted"] is True and "not present" in res["warnings_list"][0]
    res = run_module(
        swiotlb_info.main, {"debugfs_path": str(tmp_path / "none"), "requested_slots": 2048, "pool_log_mib": 64}
    )
    assert res["accepted"] is False


@pytest.mark.parametrize(
    "args",
    [{"margin_factor": 0.5}, {"floor_mib": 0}, {"requested_slots": 0}, {"window": 10, "interval": 0}],
)
def test_bad_input_fails(tmp_path, device, args):
    res = run_module(swiotlb_info.main, {"debugfs_path": debugfs(tmp_path, nslabs=2048, used=0), **args})
    assert res["failed"] is True
