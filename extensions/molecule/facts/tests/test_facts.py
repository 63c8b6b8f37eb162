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

VARIANT = {"es-facts-nano": "orin-nano-8gb", "es-facts-thor": "agx-thor", "es-facts-r35": "orin-nano-8gb-r35"}


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
    # The R35 stock entry has no FDT line (the firmware's DT is used).
    fdt = None if "extlinux" in v else f"/boot/dtb/kernel_{v['dtb']}"
    assert info["boot"]["extlinux"]["boot_entry"]["fdt"] == fdt


def test_preflight_on_its_own(host):
    """The preflight role (the engine's pre-flight, no layer) reads the same device, and refuses a release outside
    the supported majors with the release in the message."""
    got = facts(host)
    info, pf = got["info"], got["preflight"]
    assert pf["is_jetson"] is True and pf["model"] == info["model"] and pf["soc"] == info["soc"]
    assert pf["l4t"]["major"] == info["l4t"]["major"] and pf["boot_layers_refused"] == ""
    # /boot of a simulated device is on the host's filesystem, whose free space moves between converge and verify
    free_mb = int(host.check_output("df --output=avail -k /boot | tail -1")) // 1024
    assert abs(pf["boot_free_mb"] - free_mb) <= max(64, free_mb // 100), (pf["boot_free_mb"], free_mb)
    if info["l4t"]["major"] == 36:
        assert got["refusal"] == "", got["refusal"]
    else:
        name = host.backend.get_hostname()
        assert f"L4T {info['l4t']['version']} on {name} is not supported (supported majors: 36)" in got["refusal"]


def test_release_python(host):
    """Modules ran on the release's own interpreter (3.8 / 3.10 / 3.12), which is also /usr/bin/python3."""
    v = simcheck.variant(variant_of(host))
    ran_on = facts(host)["python"]
    assert ran_on["executable"] == f"/usr/bin/python{v['python']}"
    assert "{major}.{minor}".format(**ran_on["version"]) == v["python"]
    assert host.file("/usr/bin/python3").linked_to == f"/opt/jetpack-python/{v['python']}/bin/python{v['python']}"
    assert host.check_output("/usr/bin/python3 -c 'import sys; print(sys.version_info[:2])'") == str(
        tuple(int(x) for x in v["python"].split("."))
    )
    # Debian's tools keep Debian's interpreter.
    assert host.file("/usr/bin/py3compile").content_string.startswith("#!/usr/bin/python3.11\n")


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
