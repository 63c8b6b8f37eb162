"""Emulated Jetson-like arm64 guest under QEMU TCG: the machine definition (shared by the image builder and the
harness, so the DTB is dumped with the run-time options: emulated-boot.md trap 2) and the harness itself.

    python tests/boot/qemu.py up [--port N]     # boot a throw-away guest from the cached image, print ssh/inventory
    python tests/boot/qemu.py down              # stop it (by PID)

Harness pieces (emulated-boot.md §5/§6): per-guest qcow2 overlay on the cached base, QEMU daemonized with a pidfile,
console on a file kept as an artifact, monitor on a unix socket, SSH on 127.0.0.1:<port> only (user networking with
restrict=on), and a boot watchdog that does `system_reset` through the monitor when a boot stalls (TCG guests hang
now and then: emulated-boot.md §5 saw 2 hangs in 25 `-smp 2` boots).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
UBOOT = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
# -smp 1: the two hangs of emulated-boot.md §5 were at -smp 2 (MTTCG); 9/9 boots at -smp 1 were fine and not slower
# on a 2-core host. -m 4096: RAM must reach above 4 GiB (virt's RAM starts at 1 GiB) or arm64 6.1 allocates no
# SWIOTLB at all and swiotlb=N silently does nothing (emulated-boot.md §3).
MACHINE = ["-M", "virt", "-cpu", "cortex-a57", "-smp", "1", "-m", "4096"]
FIRMWARE = ["-bios", UBOOT]
GUEST_USER = "nvidia"
# Printed to the console (via /dev/kmsg) by edgeslim-emu-ready.service once sshd runs: the watchdog's "boot done".
READY_MARK = "edgeslim-emu: ready"
BOOT_MARK = "U-Boot 20"  # U-Boot's banner: a (re)boot has started
# The kernel's first line: with no U-Boot banner before it, a kexec boot (the engine's trial boot) has started.
KERNEL_MARK = "Booting Linux on physical CPU"
# A boot that shows no READY_MARK this long after U-Boot's banner is stalled. Measured boots: 32-102 s cold,
# 49-188 s for reboots at load 12-17 (emulated-boot.md §5); 420 s leaves room for a loaded CI host.
STALL_SECONDS = int(os.environ.get("EDGESLIM_BOOT_STALL_SECONDS", "420"))
MAX_RESETS = int(os.environ.get("EDGESLIM_BOOT_MAX_RESETS", "3"))
SSH_OPTS = [
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
    # Trap 4: through user networking the old connection is not closed when the guest reboots.
    "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
]  # fmt: skip


def machine_args() -> list[str]:
    return [*MACHINE, *FIRMWARE]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def monitor(sock_path: Path, command: str, timeout: float = 10.0) -> str:
    """One human-monitor command through the unix socket; returns what QEMU printed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        out = b""
        while b"(qemu)" not in out:
            out += sock.recv(4096)
        sock.sendall(command.encode() + b"\n")
        time.sleep(0.5)
        try:
            out = sock.recv(65536)
        except TimeoutError:
            out = b""
    return out.decode(errors="replace")


class Watchdog(threading.Thread):
    """Tails the console log. A boot starts at U-Boot's banner (or, for a kexec boot, at the kernel's first line with
    no banner before it) and ends at READY_MARK; a boot that stalls longer
    than STALL_SECONDS gets a `system_reset` (the edited extlinux.conf is on disk, so a hard reset is a valid
    reboot: emulated-boot.md §5). Records every boot's duration and every reset."""

    def __init__(self, guest: Guest):
        super().__init__(daemon=True, name=f"watchdog-{guest.name}")
        self.guest = guest
        self.stop_event = threading.Event()
        self.boots: list[dict] = []
        self.resets: list[dict] = []
        self.gave_up = False
        self._pos = 0
        self._boot_t0: float | None = None
        self._via = "firmware"

    def run(self) -> None:
        buf = ""
        while not self.stop_event.is_set():
            try:
                with open(self.guest.console, "rb") as handle:
                    handle.seek(self._pos)
                    chunk = handle.read()
                    self._pos += len(chunk)
            except FileNotFoundError:
                chunk = b""
            buf += chunk.decode(errors="replace")
            lines = buf.split("\n")
            buf = lines.pop()
            now = time.monotonic()
            for line in lines:
                if BOOT_MARK in line:
                    self._boot_t0 = now
                    self._via = "firmware"
                elif KERNEL_MARK in line and self._boot_t0 is None:
                    self._boot_t0 = now
                    self._via = "kexec"
                elif READY_MARK in line and self._boot_t0 is not None:
                    boot_id = re.search(r"boot_id=(\S+)", line)
                    self.boots.append({
                        "seconds": round(now - self._boot_t0, 1),
                        "boot_id": boot_id.group(1) if boot_id else None,
                        "after_reset": bool(self.resets) and self.resets[-1].get("boot_index") == len(self.boots),
                        "via": self._via,
                    })  # fmt: skip
                    self._boot_t0 = None
            if self._boot_t0 is not None and now - self._boot_t0 > STALL_SECONDS:
                self._reset(now)
            self.stop_event.wait(1.0)

    def _reset(self, now: float) -> None:
        if len(self.resets) >= MAX_RESETS:
            self.gave_up = True
            self._boot_t0 = None
            return
        self.resets.append({"boot_index": len(self.boots), "stalled_seconds": round(now - self._boot_t0, 1),
                            "at": time.strftime("%FT%TZ", time.gmtime())})  # fmt: skip
        print(f"watchdog: boot of {self.guest.name} stalled {now - self._boot_t0:.0f} s: system_reset", flush=True)
        try:
            monitor(self.guest.mon, "system_reset")
        except OSError as exc:
            print(f"watchdog: monitor failed: {exc}", flush=True)
        self._boot_t0 = time.monotonic()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


class Guest:
    """One emulated device: overlay + QEMU + watchdog. Artifacts (console.log, boots.json) stay in run_dir."""

    def __init__(self, image_dir: Path, run_dir: Path, name: str = "jetson-emu", port: int | None = None):
        self.image_dir = Path(image_dir)
        self.run_dir = Path(run_dir)
        self.name = name
        self.port = port or free_port()
        self.key = self.image_dir / "id_ed25519"
        self.overlay = self.run_dir / "disk.qcow2"
        self.pflash = self.run_dir / "pflash1.img"
        self.console = self.run_dir / "console.log"
        self.mon = self.run_dir / "mon.sock"
        self.pidfile = self.run_dir / "qemu.pid"
        self.watchdog: Watchdog | None = None
        self.started: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.overlay, self.pflash, self.console, self.mon, self.pidfile):
            stale.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image_dir / "base.qcow2"),
                        "-F", "qcow2", str(self.overlay)], check=True)  # fmt: skip
        shutil.copyfile(self.image_dir / "pflash1.img", self.pflash)
        argv = [
            "qemu-system-aarch64", *machine_args(), "-name", self.name,
            # Trap 1: U-Boot environment with fdt_addr_r (else the FDT line is skipped silently).
            "-drive", f"if=pflash,unit=1,format=raw,file={self.pflash}",
            "-drive", f"if=none,id=hd0,file={self.overlay},format=qcow2,cache=unsafe",
            "-device", "virtio-blk-pci,drive=hd0",
            # restrict=on: the guest reaches nothing but this one forwarded port.
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            # romfile= : no iPXE option ROM (U-Boot boots from disk; Debian ships it in another package).
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-display", "none", "-serial", f"file:{self.console}",
            "-monitor", f"unix:{self.mon},server,nowait",
            "-daemonize", "-pidfile", str(self.pidfile),
        ]  # fmt: skip
        self.started = time.monotonic()
        # Niced like every heavy job on the shared 2-core machines (no effect when the lane runs alone, as in CI).
        subprocess.run(["nice", "-n", os.environ.get("EDGESLIM_BOOT_NICE", "10"), *argv], check=True)
        self.watchdog = Watchdog(self)
        self.watchdog.start()

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """Stop QEMU by its PID (never by name), then record the boot statistics."""
        if self.watchdog:
            self.watchdog.stop()
        pid = self.pid()
        if pid is not None and self.alive():
            os.kill(pid, signal.SIGTERM)
            for _attempt in range(50):
                if not self.alive():
                    break
                time.sleep(0.2)
            else:
                os.kill(pid, signal.SIGKILL)
        self.write_stats()
        self.overlay.unlink(missing_ok=True)
        self.pflash.unlink(missing_ok=True)

    def stats(self) -> dict:
        wd = self.watchdog
        return {
            "name": self.name,
            "port": self.port,
            "boots": wd.boots if wd else [],
            "watchdog_resets": wd.resets if wd else [],
            "watchdog_gave_up": wd.gave_up if wd else False,
        }

    def write_stats(self) -> None:
        (self.run_dir / "boots.json").write_text(json.dumps(self.stats(), indent=2) + "\n")

    # -- access ----------------------------------------------------------------------------------------------------
    def ssh_argv(self, user: str = GUEST_USER) -> list[str]:
        return ["ssh", "-i", str(self.key), "-p", str(self.port), *SSH_OPTS, f"{user}@127.0.0.1"]

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """One command over SSH. rc 255 is ssh's own failure (a banner timeout when a TCG guest is starved: seen
        once at load 10 right after a play); retried, since the commands here only read."""
        for attempt in range(3):
            res = subprocess.run([*self.ssh_argv(), command], capture_output=True, text=True, check=False,
                                 timeout=timeout)  # fmt: skip
            if res.returncode != 255:
                break
            time.sleep(5 * (attempt + 1))
        if check and res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, res.args, res.stdout, res.stderr)
        return res

    def boot_id(self) -> str | None:
        try:
            res = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=30)
        except subprocess.TimeoutExpired:
            return None
        return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None

    def wait_ssh(self, previous_boot_id: str | None = None, timeout: float = 1500) -> str:
        """Wait until SSH answers with a boot_id other than previous_boot_id. The watchdog resets stalled boots
        meanwhile; timeout covers MAX_RESETS stalls plus a slow boot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"QEMU of {self.name} is gone (see {self.console})")
            if self.watchdog and self.watchdog.gave_up:
                raise RuntimeError(f"{self.name}: boot stalled {MAX_RESETS + 1} times (see {self.console})")
            boot_id = self.boot_id()
            if boot_id and boot_id != previous_boot_id:
                return boot_id
            time.sleep(3)
        raise TimeoutError(f"{self.name}: no SSH within {timeout} s (see {self.console})")

    def inventory(self, path: Path, extra_vars: dict | None = None) -> Path:
        """An Ansible inventory for this guest (become as the L4T default user `nvidia`)."""
        host = {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": GUEST_USER,
            "ansible_become": True,
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": " ".join(SSH_OPTS),
            "ansible_python_interpreter": "/usr/bin/python3",
            **(extra_vars or {}),
        }
        doc = {"all": {"hosts": {self.name: host}}}
        path.write_text(json.dumps(doc, indent=2) + "\n")  # JSON is YAML: the yaml inventory plugin reads it
        return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--port", type=int)
    sub.add_parser("down")
    args = parser.parse_args()
    run_dir = REPO / "build/boot/manual"
    if args.cmd == "up":
        sys.path.insert(0, str(HERE))
        import image

        guest = Guest(image.ensure(), run_dir, port=args.port)
        guest.start()
        t0 = time.monotonic()
        boot_id = guest.wait_ssh()
        inventory = guest.inventory(run_dir / "hosts.yml")
        print(f"up in {time.monotonic() - t0:.0f} s, boot_id {boot_id}; inventory {inventory}")
        print(" ".join(guest.ssh_argv()))
        return 0
    pidfile = run_dir / "qemu.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        pidfile.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
