"""A fake Jetson for the engine's boot layers (tests of the device module and of its action plugin): a rootfs with
extlinux.conf and the board DTB, the Orin Nano's live device tree, the checker's state directories, a fake systemctl,
boot id, dmesg and meminfo, what a reboot into the boot layers changes, and a device lock without systemd.

The fixtures ``tree`` and ``fake_lock`` are defined here once. A test module that uses one binds it among its own
names (``tree_fixture = bootdevice.tree_fixture``), where pytest finds it under its name ``tree``."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from ansible.module_utils import basic
from ansible_collections.edgeslim.jetson.plugins.module_utils import devlock, hostguards
from ansible_collections.edgeslim.jetson.plugins.modules import engine
from conftest import FIXTURES, swiotlb_debugfs
from modhelper import run_module

REPO = Path(__file__).resolve().parents[4]
SIM = REPO / "tests" / "sim"
sys.path.insert(0, str(SIM))
import build_image
import dtb2fs

DTC = shutil.which("dtc")
DTB = "/boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb"
OVERLAY = "/boot/edgeslim/carveouts.dtbo"
CAMERA = "/boot/tegra234-p3767-camera-p3768-imx219-dual.dtbo"
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
# A stand-in UEFI Secure Boot signing hook: sha256 of the file into <file>.sig, every call logged; SIGN_FAIL=<substring>
# fails (rc 1) for the files whose path contains it, SIGN_FAIL_ONCE only the first time, SIGN_EMPTY writes an empty
# .sig. (The simulated device cannot verify a signature; the engine only needs a non-empty <file>.sig.)
SIGN_HOOK = r"""
import hashlib, os, sys
path, log = sys.argv[1], sys.argv[2]
with open(log, "a") as handle:
    handle.write(path + "\n")
fail = os.environ.get("SIGN_FAIL")
if fail and fail in path:
    flag = log + ".failed-once"
    if not (os.environ.get("SIGN_FAIL_ONCE") and os.path.exists(flag)):
        open(flag, "w").close()
        sys.stderr.write("signing service refused " + path + "\n")
        sys.exit(1)
with open(path, "rb") as handle:
    digest = hashlib.sha256(handle.read()).hexdigest()
with open(path + ".sig", "w") as handle:
    handle.write("" if os.environ.get("SIGN_EMPTY") else digest + "\n")
"""


def build_tree(base: Path) -> Path:
    """The Orin Nano variant's board DTB (base/board.dtb) and its live tree (base/dt)."""
    build_image.compile_dts(SIM / "variants" / "orin-nano-8gb" / "board.dts", base / "board.dtb")
    dtb2fs.unpack((base / "board.dtb").read_bytes(), base / "dt")
    return base


@pytest.fixture(scope="module", name="tree")
def tree_fixture(tmp_path_factory) -> Path:
    """The fake Orin Nano's live device tree, built once per test module (tests read it, never change it)."""
    if DTC is None:
        pytest.skip("dtc not installed")
    return build_tree(tmp_path_factory.mktemp("nano"))


class FakeLock:
    """devlock.DeviceLock without systemd: ``log`` says what happened (``acquired``, ``released``), ``units`` the
    holder unit of each entry, and ``busy`` refuses like the real lock does while another run holds it."""

    log: ClassVar[list[str]] = []
    units: ClassVar[list[str]] = []
    busy: ClassVar[bool] = False

    def __init__(self, module: Any, path: str, run_id: str, *args: Any, **kwargs: Any) -> None:
        self.unit = devlock.unit_name(run_id)
        self.run_id = run_id

    @classmethod
    def reset(cls) -> None:
        cls.log, cls.units, cls.busy = [], [], False

    def _record(self, event: str) -> None:
        FakeLock.log.append(event)
        FakeLock.units.append(self.unit)

    def acquire(self) -> dict[str, Any]:
        if FakeLock.busy:
            raise devlock.LockError("another edgeslim run holds the device lock /run/edgeslim/device.lock: run X",
                                    unit=self.unit, held=False, holder={"run_id": "X"})  # fmt: skip
        self._record("acquired")
        return {"changed": True, "unit": self.unit, "held": True, "record": {}}

    def release(self) -> dict[str, Any]:
        self._record("released")
        return {"changed": True, "unit": self.unit, "held": False}


@pytest.fixture(name="fake_lock")
def fake_lock_fixture(monkeypatch) -> type[FakeLock]:
    """The device lock of the engine (and of the deadline's restore) is FakeLock for the test: free, nothing logged."""
    FakeLock.reset()
    monkeypatch.setattr(devlock, "DeviceLock", FakeLock)
    return FakeLock


class Device:
    """A rootfs in tmp_path with the boot files, the state directories and a fake systemctl."""

    def __init__(self, tmp: Path, tree: Path) -> None:
        self.root = tmp / "root"
        for f in ("boot/Image", "boot/initrd"):
            (self.root / f).parent.mkdir(parents=True, exist_ok=True)
            (self.root / f).write_text("x")
        (self.root / DTB.lstrip("/")).parent.mkdir(parents=True)
        shutil.copy(tree / "board.dtb", self.root / DTB.lstrip("/"))
        (self.root / "boot/extlinux").mkdir()
        self.conf = self.root / "boot/extlinux/extlinux.conf"
        shutil.copy(FIXTURES / "extlinux" / "r36-stock.conf", self.conf)
        self.state = tmp / "var"
        self.etc = tmp / "etc"
        self.journal = str(tmp / "var/journal.json")
        (tmp / "nv_tegra_release").write_text((FIXTURES / "l4t" / "r36.4.7.txt").read_text())
        (tmp / "cmdline").write_text("root=/dev/mmcblk0p1 rw\n")
        self.tmp, self.tree = tmp, tree / "dt"
        self.debugfs: str | None = None  # with_pool() gives the device a SWIOTLB pool
        self.enabled = False
        self.boot_id = "boot-1"
        self.meminfo = tmp / "meminfo"
        self.set_memtotal(7999000)
        self.calls: list[list[str]] = []
        self.moves: list[str] = []
        # The play arrives over SSH through sudo (the module's ancestors), on eth0 at 10.88.0.5 (ip -j addr), with a
        # default route via 10.88.0.1: the management path apply records for the checker.
        self.proc = tmp / "proc"
        fake_proc(self.proc, [(1, 0, "systemd", {}), (700, 1, "sshd", {}),
                              (812, 700, "sudo", {"SSH_CONNECTION": "10.88.0.1 51234 10.88.0.5 22"}),
                              (os.getpid(), 812, "python3", {"USER": "root"})])  # fmt: skip
        (self.proc / "net").mkdir()
        (self.proc / "net" / "route").write_text(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            f"eth0\t00000000\t{word('10.88.0.1')}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        )
        self.ip_addr = [{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "10.88.0.5", "prefixlen": 16,
                                                          "scope": "global"}]}]  # fmt: skip

    def boot(self, **layers: Any) -> dict[str, Any]:
        return {
            "extlinux_path": str(self.conf),
            "root": str(self.root),
            "boot_root": "/boot",
            "devicetree_path": str(self.tree),
            "release_path": str(self.tmp / "nv_tegra_release"),
            "efivars_path": str(self.tmp / "efivars"),
            "cmdline_path": str(self.tmp / "cmdline"),
            "checker": {
                "program": (REPO / "roles/boot_commit/files/edgeslim-boot-commit.py").read_text(),
                "unit": (REPO / "roles/boot_commit/files/edgeslim-boot-commit.service").read_text(),
                "program_path": str(self.etc / "lib/edgeslim-boot-commit"),
                "unit_path": str(self.etc / "systemd/edgeslim-boot-commit.service"),
                "state_dir": str(self.state),
            },
            **layers,
        }

    def set_memtotal(self, kb: int) -> None:
        text = (FIXTURES / "meminfo" / "orin-nano-r36.txt").read_text()
        self.meminfo.write_text(re.sub(r"MemTotal:\s+\d+", f"MemTotal:       {kb}", text))

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        if argv[0] == "boot-id":
            return 0, self.boot_id + "\n", ""
        if argv[1:3] == ["-j", "addr"]:  # get_bin_path is faked: every binary is /bin/systemctl here
            return 0, json.dumps(self.ip_addr), ""
        if argv[1:3] == ["-o", "addr"]:
            return 0, "2: eth0    inet 10.88.0.5/16 brd 10.88.255.255 scope global eth0\n", ""
        if argv[0] == "dmesg":
            return 0, "software IO TLB: mapped [mem 0x00000000f8000000-0x00000000f8400000] (4MB)\n", ""
        if argv[1:2] == ["is-enabled"]:
            return (0, "enabled\n", "") if self.enabled else (1, "disabled\n", "")
        if argv[1:2] == ["enable"]:
            self.enabled = True
        if argv[1:2] == ["disable"]:
            self.enabled = False
        return 0, "", ""

    def run(self, phase: str, boot: dict[str, Any], check: bool = False, **extra: Any) -> dict[str, Any]:
        real_move = basic.AnsibleModule.atomic_move

        def move(module: Any, src: str, dest: str, *a: Any, **k: Any) -> None:
            self.moves.append(dest)
            real_move(module, src, dest, *a, **k)

        args = {
            "phase": phase,
            "journal_path": self.journal,
            "boot": boot,
            "management_interface": "eth0",
            "measure": {"meminfo_path": str(self.meminfo), "boot_id_command": ["boot-id"]},
            "deadline_program_path": str(self.etc / "lib/edgeslim-deadline.pyz"),
            **extra,
        }
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(basic.AnsibleModule, "atomic_move", move)
            mp.setattr(hostguards, "PROC_ROOT", str(self.proc))
            mp.setattr(hostguards, "PROC_NET", str(self.proc / "net"))
            return run_module(engine.main, args, check=check, diff=True, run_command=self, bin_path="/bin/systemctl")

    def pending(self) -> list[str]:
        d = self.state / "pending"
        return sorted(os.listdir(d)) if d.is_dir() else []


def with_pool(device: Device) -> Device:
    """The device with a SWIOTLB pool in debugfs (``device.debugfs``: 32768 slots, 10 in use, high-water mark 100),
    what the action plugin checks a new size against."""
    device.debugfs = swiotlb_debugfs(device.tmp, nslabs=32768, used=10, hiwater=100)
    return device


def task_boot(device: Device, **settings: Any) -> dict[str, Any]:
    """The engine task's ``boot`` option for both boot layers on a device ``with_pool``: the device's paths, the
    overlay cache in its tmp, and the layers' settings (the overlays method, then ``settings``)."""
    boot = device.boot(swiotlb={"debugfs_path": device.debugfs})
    boot["cache_dir"] = str(device.tmp / "cache")
    boot["settings"] = {"carveouts_fdt_method": "overlays", **settings}
    return boot


def set_secure_boot(device: Device, on: bool) -> None:
    """The efivarfs SecureBoot variable: 4 attribute bytes, then 1 (on) or 0 (off)."""
    (device.tmp / "efivars").mkdir(exist_ok=True)
    (device.tmp / "efivars" / SECURE_BOOT_VAR).write_bytes(b"\x06\0\0\0" + (b"\x01" if on else b"\x00"))


def sign_hook(tmp: Path) -> tuple[list[str], Path]:
    """The stand-in hook's argv (with {file}) and its call log."""
    (tmp / "sign-hook.py").write_text(SIGN_HOOK)
    log = tmp / "sign-hook.log"
    return [sys.executable, str(tmp / "sign-hook.py"), "{file}", str(log)], log


def hook_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def word(address: str) -> str:
    """An IPv4 address as /proc/net/route prints it: one 32-bit word in the host's byte order."""
    return f"{struct.unpack('=L', socket.inet_aton(address))[0]:08X}"


def fake_proc(root: Path, tree: list[tuple[int, int, str, dict[str, str]]]) -> None:
    """Processes as the kernel shows them: /proc/<pid>/stat and NUL-separated environ."""
    for pid, ppid, comm, env in tree:
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {ppid} 0 -1 4194560 1073 0 0 0 0 0 0 0 20 0 1 0\n")
        (d / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))


def compiled(dts: str, tmp: Path) -> str:
    (tmp / "c.dts").write_text(dts)
    subprocess.run([DTC, "-q", "-I", "dts", "-O", "dtb", "-o", str(tmp / "c.dtbo"), str(tmp / "c.dts")], check=True)
    return base64.b64encode((tmp / "c.dtbo").read_bytes()).decode()


def reboot_into(device: Device, applied: dict[str, Any], committed: bool = True, disable: bool = True) -> None:
    """What the reboot gives the fake device: a new boot id, the new command line and pool, the overlay applied to
    the live tree, MemTotal up by the freed memory, and the checker's verdicts."""
    device.boot_id = "boot-2"
    kernel_slots = applied["boot"]["swiotlb"]["kernel_slots"]
    (device.tmp / "cmdline").write_text("root=/dev/mmcblk0p1 rw swiotlb=2048\n")
    shutil.rmtree(device.tmp / "swiotlb", ignore_errors=True)
    (device.tmp / "swiotlb").mkdir()
    for name, value in (("io_tlb_nslabs", kernel_slots), ("io_tlb_used", 0), ("io_tlb_used_hiwater", 3)):
        (device.tmp / "swiotlb" / name).write_text(f"{value}\n")
    if disable:
        for node in applied["boot"]["carveouts"]["paths"]:
            (device.tree / node.lstrip("/") / "status").write_bytes(b"disabled\0")
    device.set_memtotal(7999000 + 60 * 1024 + 62 * 1024)  # 60 MiB of pool and 62 MiB of carveouts back
    status = "committed" if committed else "reverted"
    verdicts = device.state / "boot-commit"
    verdicts.mkdir(parents=True, exist_ok=True)
    for layer in ("swiotlb", "carveouts"):
        (verdicts / f"{layer}.json").write_text(json.dumps({"status": status, "notes": [], "failures": []}))
