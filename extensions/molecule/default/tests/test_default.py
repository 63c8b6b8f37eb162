"""The simulated Jetson looks like a JetPack 6 Orin Nano, and the checks catch a broken one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "sim"))
import simcheck

VARIANT = "orin-nano-8gb"
SCALE = 0.1
MEMTOTAL_MIB = int(os.environ.get("EDGESLIM_SIM_MEMTOTAL_MIB_ORIN_NANO_8GB", "7620"))


def test_default_target_is_graphical(host):
    assert simcheck.check_default_target(host) == []


def test_services_active_and_holding_memory(host):
    assert simcheck.check_services(host, SCALE) == []


def test_identity_files(host):
    assert simcheck.check_identity(host, VARIANT) == []


def test_device_tree(host):
    assert simcheck.check_device_tree(host, VARIANT) == []
    model = host.run("tr -d '\\0' < /sys/firmware/devicetree/base/model").stdout
    assert model == "NVIDIA Jetson Orin Nano Developer Kit"


def test_memtotal_is_the_modules(host):
    assert simcheck.check_memtotal(host, MEMTOTAL_MIB) == []


def test_display_manager_aliases(host):
    assert host.run("systemctl show -p UnitFileState --value gdm.service").stdout.strip() == "static"
    assert host.run("readlink /etc/systemd/system/display-manager.service").stdout.strip().endswith("gdm3.service")
    assert host.run("systemctl show -p Id --value gdm3.service").stdout.strip() == "gdm.service"


@pytest.fixture
def broken(host):
    """A deliberately broken host: one simulated daemon stopped, the device tree 'missing'."""
    host.run("mkdir -p /tmp/empty-dt && systemctl stop nvargus-daemon.service")
    yield host
    host.run("systemctl start nvargus-daemon.service")


def test_checks_fail_on_a_broken_host(broken):
    problems = simcheck.check_services(broken, SCALE)
    assert any(p.startswith("nvargus-daemon.service is") for p in problems), problems
    assert simcheck.check_device_tree(broken, VARIANT, root="/tmp/empty-dt")
    assert simcheck.check_memtotal(broken, MEMTOTAL_MIB + 1)
    assert simcheck.check_default_target(broken, "multi-user.target")
