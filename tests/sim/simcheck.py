"""Checks that a host really looks like a JetPack 6 device, shared by the Molecule verifiers.

Each check takes a testinfra ``host`` and returns a list of problems (empty = fine), so the same code is run
against a healthy simulated Jetson and against a deliberately broken one (tests must be able to fail).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DT_ROOT = "/sys/firmware/devicetree/base"


def inventory() -> list[dict[str, Any]]:
    return yaml.safe_load((HERE / "image" / "services.yml").read_text())["units"]


def variant(name: str) -> dict[str, Any]:
    return yaml.safe_load((HERE / "variants" / name / "variant.yml").read_text())


def unit_pss_kb(host: Any, unit: str) -> int:
    """Sum of Pss over the unit's control-group processes (cgroup v2, else v1 under the systemd hierarchy)."""
    cg = host.check_output(f"systemctl show -p ControlGroup --value {unit}").strip()
    if not cg:
        return 0
    script = (
        f"for f in /sys/fs/cgroup{cg}/cgroup.procs /sys/fs/cgroup/systemd{cg}/cgroup.procs; do "
        '[ -r "$f" ] && { cat "$f"; break; }; done | while read -r p; do '
        "awk '/^Pss:/{print $2}' \"/proc/$p/smaps_rollup\" 2>/dev/null; done"
    )
    out = host.run(script).stdout.split()
    return sum(int(x) for x in out)


def unit_states(text: str) -> dict[str, tuple[str, str]]:
    """``systemctl show -p Id,UnitFileState,ActiveState`` output -> {unit: (UnitFileState, ActiveState)}."""
    out = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines())
        out[props["Id"]] = (props["UnitFileState"], props["ActiveState"])
    return out


def check_units_as_recorded(host: Any, record: str = "/root/es-pre-state.txt") -> list[str]:
    """Every unit recorded by prepare (systemctl show output) is in the same enablement and activity again."""
    pre = unit_states(host.file(record).content_string)
    now = unit_states(host.check_output(f"systemctl show -p Id,UnitFileState,ActiveState -- {' '.join(pre)}"))
    problems = [f"{u}: {pre[u]} before, {now.get(u)} now" for u in pre if now.get(u) != pre[u]]
    if len(pre) < 11:
        problems.append(f"{record} lists only {len(pre)} units: prepare did not record the profile's units")
    return problems


def check_display_manager_aliases(host: Any) -> list[str]:
    """gdm3 and display-manager are aliases of gdm.service again, as on a stock JetPack 6 image."""
    states = host.check_output("systemctl is-enabled gdm3.service display-manager.service || true").split()
    return [] if states == ["alias", "alias"] else [f"gdm3/display-manager are {states}, expected alias/alias"]


def check_default_target(host: Any, expected: str = "graphical.target") -> list[str]:
    got = host.check_output("systemctl get-default").strip()
    return [] if got == expected else [f"default target is {got}, expected {expected}"]


def check_services(host: Any, scale: float, tolerance: float = 0.9) -> list[str]:
    """Every unit of the inventory is active; each simulated daemon holds >= tolerance x its scaled size."""
    problems = []
    for unit in inventory():
        name = unit["name"]
        state = host.run(f"systemctl is-active {name}").stdout.strip()
        if state != "active":
            problems.append(f"{name} is {state}")
            continue
        if unit["kind"] == "sim":
            want_kb = unit["size_mib"] * 1024 * scale
            got_kb = unit_pss_kb(host, name)
            if got_kb < tolerance * want_kb:
                problems.append(f"{name} holds {got_kb} kB PSS, expected >= {tolerance * want_kb:.0f} kB")
    return problems


def check_identity(host: Any, variant_name: str) -> list[str]:
    v = variant(variant_name)
    problems = []
    release = host.file("/etc/nv_tegra_release")
    if not release.exists or not release.content_string.startswith(v["nv_tegra_release"].splitlines()[0]):
        problems.append("/etc/nv_tegra_release missing or not the variant's release line")
    pkg = host.run("dpkg-query -W -f '${Version}' nvidia-l4t-core")
    if pkg.rc != 0 or pkg.stdout.strip() != v["l4t_core_version"]:
        problems.append(f"nvidia-l4t-core is {pkg.stdout.strip() or 'not installed'}, expected {v['l4t_core_version']}")
    conf = host.file("/boot/extlinux/extlinux.conf")
    if not conf.exists or f"FDT /boot/dtb/kernel_{v['dtb']}" not in conf.content_string:
        problems.append("extlinux.conf missing or without the variant's FDT line")
    if not host.file(f"/boot/dtb/kernel_{v['dtb']}").exists:
        problems.append("kernel DTB missing under /boot/dtb")
    return problems


def check_device_tree(host: Any, variant_name: str, root: str = DT_ROOT) -> list[str]:
    v = variant(variant_name)
    compat = host.run(f"tr '\\0' '\\n' < {root}/compatible").stdout.split()
    problems = []
    if f"nvidia,{v['soc']}" not in compat:
        problems.append(f"{root}/compatible is {compat or 'missing'}, expected nvidia,{v['soc']}")
    if not host.file(f"{root}/reserved-memory").is_directory:
        problems.append(f"{root}/reserved-memory missing")
    return problems


def check_memtotal(host: Any, expected_mib: int) -> list[str]:
    got_kb = int(host.check_output("awk '/^MemTotal:/{print $2}' /proc/meminfo"))
    return [] if got_kb == expected_mib * 1024 else [f"MemTotal {got_kb} kB, expected {expected_mib * 1024} kB"]
