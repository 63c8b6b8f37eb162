#!/usr/bin/env python
"""Stand-in for a Jetson's boot chain in the simulated fleet: at every (re)start of a simulated Jetson, boot its own
extlinux.conf into the container's MemTotal (and, for fleet.py's devices, its live device tree).

A container runs the host's kernel, so nothing the bootloader or the kernel decides at boot would change there. This
stand-in runs on the host as a podman OCI hook (stage ``createRuntime``: after the container's cgroup exists, before
its init starts) at every start, including the restart after an in-guest ``reboot``. Like L4TLauncher it reads what
the **device wrote** -- ``/boot/extlinux/extlinux.conf`` in the container's root filesystem, parsed by the
collection's own parser (DEFAULT entry, else the first) -- and never a value a test or playbook passes it:

* **SWIOTLB**: ``swiotlb=`` of the entry's APPEND (none: the kernel default, 32768 slots), rounded as the device's
  kernel would (module_utils/swiotlb.py ``allocated_slots``), costs ``slots x (2048 + 24) B``.
* **Device tree**: the entry's FDT from the root filesystem (no FDT line, or a missing file: the firmware's tree,
  i.e. the variant's DTB), with the entry's OVERLAYS applied in order by ``fdtoverlay`` (libfdt's
  ``fdt_overlay_apply``, as L4TLauncher does) on top of an FDT loaded from the root filesystem, when the device's L4T
  release reads OVERLAYS (R36.2 on); a missing or failing overlay is skipped. Then the firmware's handover of the
  early-boot framebuffer (below).
* **Carve-outs**: every enabled ``no-map`` child of /reserved-memory in the booted tree costs ``S - S/512``.

MemTotal = the device's stock MemTotal (the container's configured ``--memory``, the variant's published figure for a
stock boot) + what the stock boot costs - what this boot costs. The formulas are the ones the emulated-boot lane
measured to the kB on a real arm64 kernel 6.1 (module_utils/swiotlb.py ``memtotal_cost_bytes``,
module_utils/devicetree.py ``no_map_cost_bytes``); the stand-in sets the container's cgroup memory limit to it, which
lxcfs shows as MemTotal.

**Firmware model (an assumption of the simulation, not verified on a Jetson):** UEFI hands the early-boot framebuffer
(the reserved-memory node with compatible ``nvidia,tegra-display-framebuffer``) to the kernel only while the booted
tree has a display engine enabled; with the display disabled the node is dropped and its memory is RAM. Every other
carve-out (camera RCE, ...) is the firmware's (MB1/MB2 BCT) and stays until a capsule or re-flash removes it.

This is a simulation: the emulated-boot lane (docs/emulated-boot.md) stays the proof of the formulas, and only real
hardware proves the firmware's behaviour. See docs/testing.md, "The simulated boot".

Commands:
    boot_standin.py hook        OCI hook: the container state (JSON) on stdin
    boot_standin.py plan ROOTFS FIRMWARE_DT CONFIGURED_MIB   print what a boot of ROOTFS would give (no change)
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / ".collections"))  # `make link`: the collection from this checkout
import dtb2fs
from ansible_collections.edgeslim.jetson.plugins.module_utils import devicetree as dt
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux, l4t
from ansible_collections.edgeslim.jetson.plugins.module_utils import swiotlb as tlb
from ansible_collections.edgeslim.jetson.plugins.module_utils.layer_inputs import OVERLAYS_SINCE

# Annotations a simulated Jetson carries (tests/sim/fleet.py, Molecule platforms): the stand-in's own path (the
# registered hook runs it), the firmware's device tree (kernel fs layout, the variant's stock tree) and optionally a
# per-container directory mounted at /sys/firmware/devicetree/base that is rewritten with the booted tree.
ANN_BOOT = "io.edgeslim.sim.boot"
ANN_FIRMWARE_DT = "io.edgeslim.sim.firmware-dt"
ANN_LIVE_DT = "io.edgeslim.sim.live-dt"
EXTLINUX = "boot/extlinux/extlinux.conf"
NV_TEGRA_RELEASE = "etc/nv_tegra_release"
# The kernel each L4T release ships (docs/swiotlb.md): its SWIOTLB rounding (areas from 6.x on).
KERNEL_OF_L4T = {35: "5.10", 36: "5.15", 38: "6.8", 39: "6.8"}
DISPLAY_COMPATIBLES = ("nvidia,tegra234-display", "nvidia,tegra264-display")
FRAMEBUFFER_COMPATIBLE = "nvidia,tegra-display-framebuffer"
STATE_DIR = Path(os.environ.get("EDGESLIM_SIM_BOOT_STATE", "/run/edgeslim-sim/boot"))
# A Jetson's boot chain (MB1, MB2, UEFI, L4TLauncher) takes tens of seconds before the kernel; a container restarts in
# about one. At a reboot (the container booted before) the stand-in takes FIRMWARE_SECONDS before the device's init
# starts, which also keeps a reboot command that an SSH connection retry re-sends (ansible.cfg `retries`, pauses of
# 0 + 1 + 3 s) from reaching the new boot and rebooting it again.
FIRMWARE_SECONDS = 8.0


class BootError(Exception):
    """The host side cannot simulate this boot (missing firmware tree, cgroup not writable): the start fails."""


@dataclass
class Boot:
    """What one simulated boot booted and what it costs (bytes off MemTotal, relative to nothing)."""

    label: str | None = None
    append: str = ""
    requested_slots: int | None = None
    slots: int = tlb.DEFAULT_SLOTS
    fdt: str | None = None
    overlays_applied: list[str] = field(default_factory=list)
    release: str | None = None
    framebuffer_dropped: list[str] = field(default_factory=list)
    carveouts: dict[str, int] = field(default_factory=dict)  # enabled no-map reserved-memory nodes: name -> bytes
    notes: list[str] = field(default_factory=list)

    @property
    def cost_bytes(self) -> int:
        return tlb.memtotal_cost_bytes(self.slots) + sum(dt.no_map_cost_bytes(s) for s in self.carveouts.values())


def inside(rootfs: Path, path: str) -> Path | None:
    """``path`` of the device (absolute, as extlinux.conf names it) in ``rootfs``; None when it leaves the rootfs."""
    target = (rootfs / path.lstrip("/")).resolve()
    root = rootfs.resolve()
    return target if target == root or root in target.parents else None


def read_release(rootfs: Path) -> dict | None:
    try:
        return l4t.parse_nv_tegra_release((rootfs / NV_TEGRA_RELEASE).read_text())
    except (OSError, l4t.L4TError):
        return None


def pool_slots(append: str, release: dict | None, cpus: int | None) -> tuple[int | None, int, str | None]:
    """(requested, allocated, note) for the APPEND line: the kernel default without swiotlb=, or when it is unusable."""
    setting = l4t.swiotlb_setting(append)
    if setting is None:
        return None, tlb.DEFAULT_SLOTS, None
    requested = setting["slots"]
    if not requested:
        return None, tlb.DEFAULT_SLOTS, f"swiotlb={setting['raw']} is not a slot count: the kernel default pool"
    kernel = KERNEL_OF_L4T.get((release or {}).get("major"), "5.15")
    slots, _how = tlb.allocated_slots(requested, kernel, cpus=cpus, nareas=tlb.nareas_of(str(setting["raw"])))
    return requested, slots, None


def cpu_count(tree: Path) -> int | None:
    cpus = tree / "cpus"
    if not cpus.is_dir():
        return None
    return sum(1 for p in cpus.iterdir() if p.is_dir() and p.name.startswith("cpu@")) or None


def node_status(node: Path) -> str:
    return dt.string(dt.read_prop(str(node), "status")) or "okay"


def hand_over_framebuffer(tree: Path) -> list[str]:
    """The firmware model: no enabled display engine in the booted tree -> no early-boot framebuffer node."""
    displays = dt.find_compatible(str(tree), list(DISPLAY_COMPATIBLES))
    if any(node_status(tree / p.lstrip("/")) == "okay" for p in displays):
        return []
    dropped = []
    rm = tree / "reserved-memory"
    for node in sorted(rm.iterdir()) if rm.is_dir() else ():
        if node.is_dir() and FRAMEBUFFER_COMPATIBLE in dt.strings(dt.read_prop(str(node), "compatible")):
            shutil.rmtree(node)
            dropped.append(node.name)
    return dropped


def no_map_carveouts(tree: Path) -> dict[str, int]:
    return {c.name: c.size for c in dt.reserved_memory(str(tree)) if c.no_map and c.status in ("okay", "ok") and c.size}


def boot(rootfs: Path | None, firmware_dtb: bytes, work: Path) -> tuple[Boot, Path]:
    """Boot ``rootfs``'s DEFAULT entry (None: the stock boot, firmware tree and default pool) into ``work``.

    Returns the accounting and the booted tree (kernel fs layout) under ``work``. Device-side problems (no or an
    unreadable extlinux.conf, a missing FDT or overlay) are what the firmware would live with: noted, never raised.
    """
    result = Boot()
    entry_fdt: str | None = None
    overlays: list[str] = []
    release = read_release(rootfs) if rootfs else None
    result.release = (release or {}).get("version")
    if rootfs is not None:
        try:
            conf = extlinux.parse_extlinux((rootfs / EXTLINUX).read_text(), source=EXTLINUX)
            entry = conf.default_entry()
            result.label = entry.label
            result.append = conf.get(entry, "APPEND") or ""
            entry_fdt = conf.get(entry, "FDT")
            overlays = extlinux.split_overlays(conf.get(entry, "OVERLAYS"))
        except (OSError, UnicodeDecodeError, extlinux.ExtlinuxError) as exc:
            result.notes.append(f"no bootable extlinux.conf ({exc}): stock boot")
    dtb = firmware_dtb
    if entry_fdt:
        path = inside(rootfs, entry_fdt) if rootfs else None
        if path is not None and path.is_file():
            dtb = path.read_bytes()
            result.fdt = entry_fdt
        else:
            result.notes.append(f"FDT {entry_fdt} not found in the root filesystem: the firmware's device tree")
    if overlays and result.fdt is None:  # applied only on top of an FDT loaded from the rootfs [EDK2 L4TLauncher]
        result.notes.append("OVERLAYS ignored: no FDT was loaded from the root filesystem")
        overlays = []
    if overlays and release and (release["major"], release["minor"]) < OVERLAYS_SINCE:
        result.notes.append(f"OVERLAYS ignored: L4T {release['version']} reads them from R36.2 on")
        overlays = []
    for overlay in overlays:
        path = inside(rootfs, overlay) if rootfs else None
        if path is None or not path.is_file():
            result.notes.append(f"overlay {overlay} not found: skipped")
            continue
        src, out = work / "in.dtb", work / "out.dtb"
        src.write_bytes(dtb)
        res = subprocess.run(["fdtoverlay", "-i", str(src), "-o", str(out), str(path)],
                             capture_output=True, text=True, check=False)  # fmt: skip
        if res.returncode != 0:
            result.notes.append(f"overlay {overlay} not applied ({res.stderr.strip()[:120]}): skipped")
            continue
        dtb = out.read_bytes()
        result.overlays_applied.append(overlay)
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    try:
        dtb2fs.unpack(dtb, tree)
    except dtb2fs.DtbError as exc:
        if dtb is firmware_dtb:
            raise BootError(f"the firmware's device tree is not a DTB: {exc}") from exc
        result.notes.append(f"FDT {entry_fdt} is not a DTB ({exc}): the firmware's device tree")
        result.fdt, result.overlays_applied = None, []
        shutil.rmtree(tree, ignore_errors=True)
        dtb2fs.unpack(firmware_dtb, tree)
    result.requested_slots, result.slots, note = pool_slots(result.append, release, cpu_count(tree))
    if note:
        result.notes.append(note)
    result.framebuffer_dropped = hand_over_framebuffer(tree)
    result.carveouts = no_map_carveouts(tree)
    if result.append:
        # /chosen/bootargs as the bootloader passes it (L4T's ${cbootargs} is the firmware's own part).
        (tree / "chosen").mkdir(exist_ok=True)
        (tree / "chosen" / "bootargs").write_bytes(result.append.replace("${cbootargs}", "").strip().encode() + b"\0")
    return result, tree


def memtotal_bytes(configured: int, stock: Boot, booted: Boot) -> int:
    """The stock boot shows the configured figure; every byte the booted entry costs less (or more) moves it."""
    return configured + stock.cost_bytes - booted.cost_bytes


def firmware_dtb_of(tree_dir: Path, work: Path) -> bytes:
    """The variant's stock tree (kernel fs layout) as a DTB, as the firmware hands it over."""
    if not (tree_dir / "name").exists():
        raise BootError(f"{tree_dir}: not a device tree in the kernel's layout (annotation {ANN_FIRMWARE_DT})")
    out = work / "firmware.dtb"
    res = subprocess.run(["dtc", "-q", "-I", "fs", "-O", "dtb", "-o", str(out), str(tree_dir)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    if res.returncode != 0:
        raise BootError(f"dtc -I fs {tree_dir}: {res.stderr.strip()}")
    return out.read_bytes()


def simulate(rootfs: Path, firmware_tree: Path, configured: int, work: Path) -> tuple[dict, Path]:
    """Account this boot against the stock one; returns the record and the booted tree."""
    firmware = firmware_dtb_of(firmware_tree, work)
    stock_dir, boot_dir = work / "stock", work / "boot"
    stock_dir.mkdir()
    boot_dir.mkdir()
    stock, _tree = boot(None, firmware, stock_dir)
    booted, tree = boot(rootfs, firmware, boot_dir)
    total = memtotal_bytes(configured, stock, booted)
    freed = {n: s for n, s in stock.carveouts.items() if n not in booted.carveouts}
    record = {
        "booted": asdict(booted),
        "configured_kb": configured // 1024,
        "memtotal_kb": total // 1024,
        "swiotlb_gain_kb": (tlb.memtotal_cost_bytes(stock.slots) - tlb.memtotal_cost_bytes(booted.slots)) // 1024,
        "carveouts_gain_kb": sum(dt.no_map_cost_bytes(s) for s in freed.values()) // 1024,
        "carveouts_freed": freed,
    }
    return record, tree


# ---- the OCI hook ---------------------------------------------------------------------------------------------------
def memory_cgroup(pid: int, proc: Path = Path("/proc"), root: Path = Path("/sys/fs/cgroup")) -> tuple[Path, int]:
    """(directory, cgroup version) of the process's memory cgroup: v1 'N:memory:/path', v2 '0::/path'."""
    text = (proc / str(pid) / "cgroup").read_text()
    for line in text.splitlines():
        _num, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return root / "memory" / path.lstrip("/"), 1
    for line in text.splitlines():
        if line.startswith("0::"):
            return root / line[3:].lstrip("/"), 2
    raise BootError(f"no memory cgroup for pid {pid}")


def set_memory_limit(cgroup: Path, version: int, limit: int) -> None:
    """The container's memory limit (lxcfs shows it as MemTotal). v1: keep the swap allowance, in a legal order."""
    if version == 2:
        (cgroup / "memory.max").write_text(str(limit))
        return
    mem, memsw = cgroup / "memory.limit_in_bytes", cgroup / "memory.memsw.limit_in_bytes"
    old = int(mem.read_text())
    if not memsw.exists():
        mem.write_text(str(limit))
        return
    swap = int(memsw.read_text()) - old
    if limit > old:  # memsw must stay >= mem at every step
        memsw.write_text(str(limit + swap))
        mem.write_text(str(limit))
    else:
        mem.write_text(str(limit))
        memsw.write_text(str(limit + swap))


def replace_tree(live: Path, tree: Path) -> None:
    """Rewrite the mounted directory's contents in place (the bind mount holds the directory itself)."""
    for child in live.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    for child in tree.iterdir():
        if child.is_dir():
            shutil.copytree(child, live / child.name)
        else:
            shutil.copy2(child, live / child.name)


def hook(state: dict, cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc"),
         firmware_seconds: float = FIRMWARE_SECONDS) -> dict:  # fmt: skip
    config = json.loads((Path(state["bundle"]) / "config.json").read_text())
    ann = config.get("annotations") or {}
    if not ann.get(ANN_FIRMWARE_DT):
        raise BootError(f"annotation {ANN_FIRMWARE_DT} (the variant's stock device tree) is missing")
    configured = ((config.get("linux") or {}).get("resources") or {}).get("memory", {}).get("limit")
    if not configured:
        raise BootError("the container has no --memory limit: nothing to account the boot into")
    rootfs = Path(config["root"]["path"])
    if not rootfs.is_absolute():
        rootfs = Path(state["bundle"]) / rootfs
    with tempfile.TemporaryDirectory(prefix="edgeslim-boot.") as tmp:
        record, tree = simulate(rootfs, Path(ann[ANN_FIRMWARE_DT]), int(configured), Path(tmp))
        cgroup, version = memory_cgroup(int(state["pid"]), proc, cgroup_root)
        set_memory_limit(cgroup, version, record["memtotal_kb"] * 1024)
        if ann.get(ANN_LIVE_DT):
            replace_tree(Path(ann[ANN_LIVE_DT]), tree)
    if (STATE_DIR / f"{state.get('id')}.json").exists():  # a reboot, not the container's first start
        time.sleep(firmware_seconds)
    record.update({
        "container": state.get("id"), "hostname": config.get("hostname"), "live_dt": ann.get(ANN_LIVE_DT),
        "at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })  # fmt: skip
    return record


def write_record(record: dict) -> None:
    """Last boot per container (STATE_DIR/<id>.json) and one line per boot in STATE_DIR/boots.log."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / f"{record['container']}.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    booted = record["booted"]
    with open(STATE_DIR / "boots.log", "a") as log:
        log.write(f"{record['at']} {record['hostname']} entry={booted['label']} slots={booted['slots']} "
                  f"fdt={booted['fdt']} overlays={','.join(booted['overlays_applied']) or '-'} "
                  f"memtotal_kb={record['memtotal_kb']} (swiotlb {record['swiotlb_gain_kb']:+d} kB, carve-outs "
                  f"{record['carveouts_gain_kb']:+d} kB) notes={booted['notes']}\n")  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[1] == "hook":
        try:
            record = hook(json.load(sys.stdin))
            write_record(record)
        except (BootError, OSError, KeyError, ValueError) as exc:
            print(f"edgeslim boot stand-in: {exc}", file=sys.stderr)
            return 1
        return 0
    if len(argv) == 5 and argv[1] == "plan":
        with tempfile.TemporaryDirectory(prefix="edgeslim-boot.") as tmp:
            record, _tree = simulate(Path(argv[2]), Path(argv[3]), int(argv[4]) * 1048576, Path(tmp))
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
