"""The facts modules agree with what the verifier reads independently on the same simulated device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests" / "sim"))
import build_image
import simcheck

VARIANT = {"es-facts-nano": "orin-nano-8gb", "es-facts-thor": "agx-thor"}


def facts(host) -> dict:
    return json.loads(host.file("/root/edgeslim-facts.json").content_string)


def variant_of(host) -> str:
    return VARIANT[host.backend.get_hostname()]


def test_identity(host):
    info = facts(host)["info"]
    v = simcheck.variant(variant_of(host))
    assert info["is_jetson"] is True
    assert info["soc"] == v["soc"].replace("tegra", "t")
    assert info["compatible"] == host.run("tr '\\0' '\\n' < /sys/firmware/devicetree/base/compatible").stdout.split()
    assert info["l4t"]["core_package"] == v["l4t_core_version"]
    assert info["boot"]["extlinux"]["boot_entry"]["fdt"] == f"/boot/dtb/kernel_{v['dtb']}"


def test_memtotal_equal(host):
    snap = facts(host)["snapshot"]
    memtotal = int(host.check_output("awk '/^MemTotal:/{print $2}' /proc/meminfo"))
    assert snap["meminfo_kb"]["MemTotal"] == memtotal


def test_unit_pss_within_one_percent(host):
    units = facts(host)["snapshot"]["units"]
    for name, got in units.items():
        independent = simcheck.unit_pss_kb(host, name)
        assert abs(got["memory_kb"] - independent) <= 0.01 * independent, (name, got, independent)


def test_carveouts_same_as_the_dts(tmp_path, host):
    dtb = tmp_path / "board.dtb"
    build_image.compile_dts(ROOT / "tests/sim/variants" / variant_of(host) / "board.dts", dtb)
    dts = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(dtb)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    section = dts.split("reserved-memory {", 1)[1]
    names, depth = [], 0
    for line in section.splitlines()[1:]:
        stripped = line.strip()
        if stripped.endswith("{"):
            if depth == 0:
                names.append(stripped[:-1].strip())
            depth += 1
        elif stripped == "};":
            if depth == 0:
                break
            depth -= 1
    got = sorted(c["name"] for c in facts(host)["info"]["carveouts"])
    assert got == sorted(names)
