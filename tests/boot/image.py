"""Build (or reuse) the "Jetson-like" arm64 guest for the emulated-boot lane, cached by a hash of its recipe.

    python tests/boot/image.py            # build if missing; prints the image directory
    python tests/boot/image.py --force    # rebuild

Recipe (docs/emulated-boot.md, emulated image): an arm64 bookworm rootfs by mmdebstrap (apt and unpacking on the
host, dpkg's configure stage in a chroot through qemu-user-static/binfmt_misc), Debian's kernel booted by Debian's
U-Boot for qemu_arm64 which reads /boot/extlinux/extlinux.conf (LINUX/INITRD/FDT/APPEND) like a Jetson's bootloader.
The guest carries the identity of the simulated Orin Nano 8GB (tests/sim/variants/orin-nano-8gb): /etc/nv_tegra_release,
an nvidia-l4t-core package, a DTB named as on L4T with Jetson compatible/model strings, reserved-memory carve-outs and
display/camera nodes (guest/jetson-nodes.dtsi), and an L4T-style extlinux.conf.

Every trap of emulated-boot.md §4 is handled here: (1) a U-Boot environment with fdt_addr_r in the second flash
bank, (2) the DTB dumped from QEMU with the run-time machine options (qemu.machine_args, shared with the harness),
(3) fixed carve-outs mid-RAM, away from where U-Boot puts initrd and DTB; binfmt re-registered before the chroot
stages, initramfs MODULES=list, dbus for `shutdown -r`. Trap 4 (ssh ServerAlive) is the harness's (qemu.SSH_OPTS).

Output, in $EDGESLIM_BOOT_CACHE (default /var/cache/edgeslim-boot)/<hash>/: base.qcow2, pflash1.img, id_ed25519
(+ .pub), manifest.json (with each step's seconds, also printed as "step: N s"). The rootfs is cached separately
(rootfs-<key>.tar) by its package list and the code that builds it, so changes to the rest of the recipe cost
~20 s instead of a cold build's ~4 min.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import inspect
import json
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests/sim"))
import build_image as sim
import qemu

CACHE = Path(os.environ.get("EDGESLIM_BOOT_CACHE", "/var/cache/edgeslim-boot"))
SUITE = "bookworm"
MIRROR = os.environ.get("EDGESLIM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
VARIANT = REPO / "tests/sim/variants/orin-nano-8gb"
# emulated-boot.md §1 step 1; dbus because `shutdown -r` (ansible.builtin.reboot) needs it; kexec-tools for the
# trial boot of a managed entry (`kexec -l`, `systemctl kexec`: docs/reliability.md, pre-userspace failures).
PACKAGES = [
    "systemd-sysv", "udev", "kmod", "dbus", "linux-image-arm64", "initramfs-tools", "openssh-server", "python3",
    "iproute2", "procps", "sudo", "ca-certificates", "zstd", "device-tree-compiler", "kexec-tools",
]  # fmt: skip
# mmdebstrap (as root): the host's apt resolves and downloads, the host unpacks the essential set, and only dpkg and the
# maintainer scripts run in the arm64 chroot under qemu-user, where every process start is slow.
MMDEBSTRAP_OPTS = [
    # /usr merged by symlinks as debootstrap does, not converted by the usrmerge package (perl, under qemu-user)
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=force-unsafe-io",  # no fsync per file: the tree is tarred once it is complete
    # documentation nobody reads on a test guest (copyright files kept); dpkg keeps excluding them in the guest
    "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    # keep the machine-id systemd's postinst wrote (as debootstrap's rootfs had): an empty one would make the guest's
    # first boot a systemd "first boot" (presets applied)
    "--skip=cleanup/reproducible",
]  # fmt: skip
# Tools that dpkg's triggers and the kernel's postinst would each run twice under qemu-user (measured: initramfs 22 s +
# 53 s, CA certificates 21 s + 30 s): stubbed during the install, run once at the end (hook_customize).
RUN_ONCE = ["/usr/sbin/update-initramfs", "/usr/sbin/update-ca-certificates"]
# MODULES=most needs > 10 min under qemu-user (one modinfo per module); the list boots from virtio/NVMe ext4.
INITRAMFS_MODULES = ["virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "nvme", "ext4"]
DISK_MIB = 2048
HOSTNAME = "orin-nano-emu"
ENV_SIZE = "0x40000"  # qemu_arm64 CONFIG_ENV_SIZE
# Where U-Boot loads the FDT named by extlinux.conf (trap 1): above kernel_addr_r 0x40400000 + Image (~32 MiB) and
# ramdisk_addr_r 0x44000000 + initrd (~6 MiB), as verified.
FDT_ADDR_R = "0x4a000000"
RECIPE = [Path(__file__), HERE / "qemu.py", HERE / "guest", VARIANT, REPO / "tests/sim/build_image.py"]

EXTLINUX = """TIMEOUT 30
DEFAULT primary

MENU TITLE L4T boot options

LABEL primary
      MENU LABEL primary kernel
      LINUX /boot/Image
      FDT /boot/dtb/kernel_{dtb}
      INITRD /boot/initrd
      APPEND ${{cbootargs}} root=/dev/vda1 rw rootwait rootfstype=ext4 mminit_loglevel=4 console=tty0 \
firmware_class.path=/etc/firmware fbcon=map:0 nospectre_bhb console=ttyAMA0,115200n8

# When testing a custom kernel, it is recommended that you create a backup of
# the original kernel and add a new entry to this file so that the device can
# fallback to the original kernel. To do this:
#
# 1, Make a backup of the original kernel
#      sudo cp /boot/Image /boot/Image.backup
#
# 2, Copy your custom kernel into /boot/Image
#
# 3, Uncomment below menu setting lines for the original kernel
#
# 4, Reboot

# LABEL backup
#    MENU LABEL backup kernel
#    LINUX /boot/Image.backup
#    FDT /boot/dtb/kernel_{dtb}
#    INITRD /boot/initrd
#    APPEND ${{cbootargs}}

"""

READY_UNIT = f"""[Unit]
Description=edgeslim emulated boot: tell the harness's watchdog (serial console) that this boot is up
After=ssh.service multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "{qemu.READY_MARK} boot_id=$(cat /proc/sys/kernel/random/boot_id) \
uptime=$(cut -d" " -f1 /proc/uptime)" > /dev/kmsg'

[Install]
WantedBy=multi-user.target
"""

# Modules udev would load for nothing on this guest (measured: udev coldplug 38 s of a 116 s cold boot under TCG at
# load 3). CPU-feature crypto drivers, wireless and the Tegra host1x driver that binds the DT's host1x node only to
# fail its probe (no named register banks). Each load also verifies a module signature, slow under TCG.
MODPROBE = """# edgeslim emulated boot: keep udev coldplug short under TCG (tests/boot/image.py)
blacklist aes_ce_blk
blacklist aes_ce_cipher
blacklist polyval_ce
blacklist ghash_ce
blacklist sha1_ce
blacklist sha2_ce
blacklist sha256_arm64
blacklist sha3_ce
blacklist sha512_ce
blacklist sha512_arm64
blacklist sm3_ce
blacklist sm4_ce
blacklist crct10dif_ce
blacklist cfg80211
blacklist host1x
# loaded by name (modprobe@drm.service, dm-event): nothing here uses them
install drm /bin/true
install dm_mod /bin/true
install efi_pstore /bin/true
"""
KEXEC_DEFAULT = """# edgeslim emulated boot: reboots go through U-Boot (tests/boot/image.py)
LOAD_KEXEC=false
KERNEL_IMAGE="/vmlinuz"
INITRD="/initrd.img"
APPEND=""
USE_GRUB_CONFIG=false
"""
NETWORK = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n"
AUTOLOGIN = (
    "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM\n"
)

STEPS: list[dict[str, Any]] = []


def log(msg: str) -> None:
    print(f"boot-image: {msg}", flush=True)


class step:
    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        self.t0 = time.monotonic()
        log(f"{self.name} ...")

    def __exit__(self, *exc: object) -> None:
        secs = round(time.monotonic() - self.t0, 1)
        STEPS.append({"step": self.name, "seconds": secs})
        log(f"{self.name}: {secs} s")


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kw)


def nice(argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
    """Heavy steps at lower priority: the 2 cores are shared with container tests. Not lower still when this process
    is niced already (mmdebstrap's hooks, `nice -n 10 python image.py`): niceness adds up, to 19 at most."""
    return run([*niced(), *argv], **kw)


def niced() -> list[str]:
    return ["nice", "-n", "10"] if os.nice(0) < 10 else []


def pkg_versions() -> str:
    """Host QEMU and U-Boot builds are part of the recipe: the dumped DTB and the U-Boot env depend on them."""
    res = run(["dpkg-query", "-W", "-f", "${Package}=${Version}\n", "qemu-system-arm", "u-boot-qemu"],
              capture_output=True, text=True)  # fmt: skip
    return res.stdout


def rootfs_key() -> str:
    """The rootfs tarball's cache key: what goes into it, and the code that builds it."""
    code = "".join(inspect.getsource(f) for f in (mmdebstrap_argv, hook_essential, hook_customize))
    text = " ".join([SUITE, MIRROR, *PACKAGES, "modules:", *INITRAMFS_MODULES, *MMDEBSTRAP_OPTS, *RUN_ONCE, code])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def recipe_hash() -> str:
    h = hashlib.sha256()
    h.update(rootfs_key().encode())
    h.update(pkg_versions().encode())
    sim.hash_files(h, RECIPE, REPO)
    return h.hexdigest()[:12]


def ensure_binfmt() -> None:
    """Containers running systemd (molecule) can unregister every host binfmt entry (systemd-binfmt)."""
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        log("binfmt qemu-aarch64 missing: re-registering")
        run(["update-binfmts", "--enable", "qemu-aarch64"])


def unmount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mnt in sorted((m for m in mounts if m.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False)


def chroot(root: Path, *argv: str, **kw: Any) -> subprocess.CompletedProcess:
    ensure_binfmt()
    return nice(["chroot", str(root), *argv], **kw)


def mmdebstrap_argv(target: Path) -> list[str]:
    me = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} --mmdebstrap-hook"
    return [
        "mmdebstrap", "--mode=root", "--variant=minbase", "--arch=arm64", "--format=tar",
        "--include=" + ",".join(PACKAGES), *MMDEBSTRAP_OPTS,
        f'--essential-hook={me} essential "$1"', f'--customize-hook={me} customize "$1"',
        SUITE, str(target), MIRROR,
    ]  # fmt: skip


def hook_essential(root: Path) -> None:
    """After the essential packages, before the rest: stub the tools whose runs are deferred to the end."""
    # Seeded before the kernel is installed, so its only initramfs is the small one.
    sim.write(root / "etc/initramfs-tools/conf.d/99-edgeslim-boot.conf", "MODULES=list\n")
    sim.write(root / "usr/share/initramfs-tools/modules.d/edgeslim-boot", "\n".join(INITRAMFS_MODULES) + "\n")
    for tool in RUN_ONCE:
        chroot(root, "dpkg-divert", "--quiet", "--local", "--rename", "--divert", tool + ".edgeslim", "--add", tool)
        sim.write(root / tool.lstrip("/"), "#!/bin/sh\n# edgeslim image build: run once at the end\nexit 0\n", 0o755)


def hook_customize(root: Path) -> None:
    """After every package: the real tools back, each run once for the whole package set."""
    for tool in RUN_ONCE:
        (root / tool.lstrip("/")).unlink()
        chroot(root, "dpkg-divert", "--quiet", "--local", "--rename", "--remove", tool)
    print("I: edgeslim: update-ca-certificates (once)", file=sys.stderr, flush=True)
    chroot(root, "update-ca-certificates", "--fresh", stdout=subprocess.DEVNULL)
    print("I: edgeslim: update-initramfs (once)", file=sys.stderr, flush=True)
    chroot(root, "update-initramfs", "-c", "-k", "all", stdout=subprocess.DEVNULL)
    for kernel in (root / "boot").glob("vmlinuz-*"):
        if not (root / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-", 1)).is_file():
            raise RuntimeError(f"update-initramfs left no initrd for {kernel.name}")
    print("I: edgeslim: customize hook done", file=sys.stderr, flush=True)


def run_mmdebstrap(argv: list[str], env: dict[str, str]) -> None:
    """Run mmdebstrap, turning its "I:" progress lines into steps (phase: seconds); its output on failure."""
    proc = subprocess.Popen([*niced(), *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")  # fmt: skip
    tail: list[str] = []
    phase, t_phase = "setup", time.monotonic()

    def phase_done(now: float) -> None:
        secs = round(now - t_phase, 1)
        if secs >= 1.0:  # mmdebstrap announces many instant checks; only phases that cost time are steps
            STEPS.append({"step": f"rootfs: {phase}", "seconds": secs})
            log(f"rootfs: {phase}: {secs} s")

    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = [*tail[-199:], line]
        if line.startswith(("W:", "E:")):
            log(f"mmdebstrap: {line}")
        if line.startswith("I: "):
            now = time.monotonic()
            phase_done(now)
            # "running --customize-hook in shell: sh -c '...'", "removing tempdir /var/...": the words, not the paths
            name = re.split(r" (?:directly|in shell): ", line[3:].rstrip("."))[0]
            phase, t_phase = re.sub(r" /\S+", "", name), now
    rc = proc.wait()
    phase_done(time.monotonic())
    if rc:
        print("\n".join(tail), file=sys.stderr)
        raise subprocess.CalledProcessError(rc, argv)


def build_rootfs(work: Path) -> Path:
    """mmdebstrap once per package list and recipe; cached as a tarball."""
    tar = CACHE / f"rootfs-{SUITE}-arm64-{rootfs_key()}.tar"
    if tar.exists():
        log(f"reusing rootfs {tar.name}")
        return tar
    part = Path(str(tar) + ".part")
    env = {**os.environ, "TMPDIR": str(work)}  # its build directory: the cache's disk, not /tmp
    work.chmod(0o755)  # apt downloads as its sandbox user _apt, who must reach that directory
    with step("rootfs (mmdebstrap arm64: apt and unpacking on the host, dpkg configure under qemu-user)"):
        ensure_binfmt()
        try:
            run_mmdebstrap(mmdebstrap_argv(part), env)
        except subprocess.CalledProcessError:
            if Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
                raise
            # Flushed mid-way (a systemd container started): "Exec format error" in the chroot. Once more, from scratch.
            log("mmdebstrap failed with binfmt qemu-aarch64 gone; re-registering and starting over")
            ensure_binfmt()
            run_mmdebstrap(mmdebstrap_argv(part), env)
        finally:
            unmount_under(work)
    os.replace(part, tar)
    return tar


def read_until(proc: subprocess.Popen, needles: list[bytes], timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready = select.select([fd], [], [], 1.0)[0]
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
            if any(n in out for n in needles):
                return out
    raise TimeoutError(f"U-Boot did not print {needles} within {timeout} s; got: {out[-2000:]!r}")


def uboot_default_env() -> list[str]:
    """printenv of U-Boot's built-in environment over the serial line (trap 1: an env in flash replaces it whole)."""
    argv = ["qemu-system-aarch64", *qemu.machine_args(), "-display", "none", "-nic", "none",
            "-serial", "stdio", "-monitor", "none"]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        read_until(proc, [b"Hit any key to stop autoboot"], 120)
        proc.stdin.write(b"\r")
        proc.stdin.flush()
        read_until(proc, [b"=> "], 30)
        proc.stdin.write(b"printenv\r")
        proc.stdin.flush()
        out = read_until(proc, [b"Environment size:"], 30)
    finally:
        proc.kill()
        proc.wait()
    lines = out.decode(errors="replace").replace("\r", "").split("\n")
    env = [line for line in lines if re.match(r"^[A-Za-z_][A-Za-z0-9_.]*=", line)]
    if not any(line.startswith("bootcmd=") for line in env):
        raise RuntimeError(f"no bootcmd in U-Boot's printenv: {lines}")
    return env


def make_pflash(out: Path, work: Path) -> list[str]:
    # fdtcontroladdr is U-Boot's own runtime value (depends on RAM size): never store it.
    env = [e for e in uboot_default_env() if not e.startswith(("fdt_addr_r=", "bootdelay=", "fdtcontroladdr="))]
    env += [f"fdt_addr_r={FDT_ADDR_R}", "bootdelay=0"]
    (work / "env.txt").write_text("\n".join(env) + "\n")
    run(["mkenvimage", "-s", ENV_SIZE, "-o", str(work / "env.bin"), str(work / "env.txt")])
    with open(out, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse, the size of virt's flash bank
        handle.seek(0)
        handle.write((work / "env.bin").read_bytes())
    return env


def make_dtb(variant: dict[str, Any], work: Path, pflash: Path) -> Path:
    """QEMU's own virt DTB (dumped with the run-time options: trap 2) + Jetson identity and nodes."""
    args = qemu.machine_args()
    args[args.index("virt")] = f"virt,dumpdtb={work / 'virt.dtb'}"
    # PCI devices (disk, NIC) are enumerated, not described in the DTB: -nic none changes nothing in it.
    run(["qemu-system-aarch64", *args, "-display", "none", "-nic", "none",
         "-drive", f"if=pflash,unit=1,format=raw,file={pflash}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    dts = run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(work / "virt.dtb")], capture_output=True, text=True).stdout
    board = (VARIANT / "board.dts").read_text()
    model = re.search(r'model = "([^"]+)";', board).group(1)
    compatible = re.search(r"compatible = (\"[^;]+);", board).group(1)
    dts, n = re.subn(r'^\tcompatible = "linux,dummy-virt";$', f"\tcompatible = {compatible};", dts, count=1, flags=re.M)
    dts, m = re.subn(r'^\tmodel = "linux,dummy-virt";$', f'\tmodel = "{model}";', dts, count=1, flags=re.M)
    if (n, m) != (1, 1):
        raise RuntimeError("QEMU's DTB has no root compatible linux,dummy-virt: machine changed?")
    # QEMU seeds /chosen with kaslr-seed and rng-seed for the boot it would make; a Jetson's DTB file carries neither
    # (the firmware adds them at each boot), and a non-zero kaslr-seed in the file makes kexec-tools refuse it as a
    # second kernel's DTB ("setup_2nd_dtb failed": the seed must be one the first kernel wiped).
    dts, seeds = re.subn(r"^\t\t(?:kaslr-seed|rng-seed) = <[^;]*>;\n", "", dts, flags=re.M)
    if seeds == 0:
        log("QEMU's DTB has no kaslr-seed or rng-seed in /chosen")
    end = dts.rstrip().rfind("};")
    dts = dts[:end] + (HERE / "guest/jetson-nodes.dtsi").read_text() + "};\n"
    (work / "board.dts").write_text(dts)
    out = work / f"kernel_{variant['dtb']}"
    run(["dtc", "-q", "-p", "4096", "-I", "dts", "-O", "dtb", "-o", str(out), str(work / "board.dts")])
    return out


def customise(root: Path, variant: dict[str, Any], dtb: Path, pubkey: str, work: Path) -> str:
    sim.write(root / "etc/hostname", HOSTNAME + "\n")
    sim.write(root / "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n")
    sim.write(root / "etc/fstab", "LABEL=APP / ext4 defaults 0 1\n")
    sim.write(root / "etc/systemd/network/20-wired.network", NETWORK)
    sim.write(root / "etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf", AUTOLOGIN)
    sim.write(root / "etc/systemd/system/edgeslim-emu-ready.service", READY_UNIT)
    sim.write(root / "etc/modprobe.d/edgeslim-emu.conf", MODPROBE)
    # kexec-tools' debconf default (LOAD_KEXEC=true) turns every reboot into a kexec of /vmlinuz, past U-Boot and
    # extlinux.conf: the lane's reboots must go through the bootloader. Only the engine's trial boot uses kexec.
    sim.write(root / "etc/default/kexec", KEXEC_DEFAULT)
    chroot(root, "systemctl", "enable", "-q", "systemd-networkd", "edgeslim-emu-ready.service")
    # Timers that would only add load to a 1-vCPU TCG guest during tests.
    for unit in (
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "e2scrub_all.timer",
        "e2scrub_reap.service",
        "fstrim.timer",
    ):
        subprocess.run(["chroot", str(root), "systemctl", "disable", "-q", unit], check=False,
                       stderr=subprocess.DEVNULL)  # fmt: skip
    # The L4T default user, passwordless sudo (as the simulated fleet), root and nvidia reachable with the key.
    chroot(root, "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", "nvidia")
    sim.write(root / "etc/sudoers.d/nvidia", "nvidia ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    for home, owner in ((root / "root", "0:0"), (root / "home/nvidia", "nvidia:nvidia")):
        sim.write(home / ".ssh/authorized_keys", pubkey, 0o600)
        (home / ".ssh").chmod(0o700)
        chroot(root, "chown", "-R", owner, "/" + str((home / ".ssh").relative_to(root)))
    # L4T identity (same files as the simulated Jetson: tests/sim/variants/orin-nano-8gb).
    sim.write(root / "etc/nv_tegra_release", variant["nv_tegra_release"])
    sim.build_deb(variant, root / "tmp/nvidia-l4t-core.deb")
    chroot(root, "dpkg", "-i", "/tmp/nvidia-l4t-core.deb", stdout=subprocess.DEVNULL)
    (root / "tmp/nvidia-l4t-core.deb").unlink()
    # Boot files as L4T names them: /boot/Image, /boot/initrd, /boot/dtb/kernel_<dtb>, extlinux.conf.
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel in /boot, found {kernels}")
    kver = kernels[0].name.removeprefix("vmlinuz-")
    image = kernels[0].read_bytes()
    if image[:2] == b"\x1f\x8b":
        image = run(["gzip", "-dc", str(kernels[0])], capture_output=True).stdout
    if image[0x38:0x3C] != b"ARM\x64":
        raise RuntimeError(f"{kernels[0]} is not an arm64 Image")
    (root / "boot/Image").write_bytes(image)
    shutil.copyfile(root / f"boot/initrd.img-{kver}", root / "boot/initrd")
    (root / "boot/dtb").mkdir(exist_ok=True)
    shutil.copyfile(dtb, root / "boot/dtb" / dtb.name)
    shutil.copyfile(work / "board.dts", root / "boot/dtb" / (dtb.stem + ".dts"))  # for people, not the bootloader
    sim.write(root / "boot/extlinux/extlinux.conf", EXTLINUX.format(dtb=variant["dtb"]))
    return kver


def make_disk(root: Path, work: Path, out: Path) -> None:
    raw = work / "disk.raw"
    fs = work / "fs.img"
    part_mib = DISK_MIB - 2  # 1 MiB for the GPT in front, 1 MiB for its backup at the end
    with open(raw, "wb") as handle:
        handle.truncate(DISK_MIB * 1024 * 1024)
    run(["sfdisk", "-q", str(raw)], input=f"label: gpt\nstart=2048, size={part_mib * 2048}, type=L, name=APP\n",
        text=True)  # fmt: skip
    nice(["mkfs.ext4", "-q", "-F", "-L", "APP", "-d", str(root), str(fs), f"{part_mib}M"])
    nice(["dd", f"if={fs}", f"of={raw}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"])
    fs.unlink()
    nice(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out)])
    raw.unlink()


def build(dest: Path) -> None:
    variant = yaml.safe_load((VARIANT / "variant.yml").read_text())
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="build-") as tmp:
        work = Path(tmp)
        out = work / "out"
        out.mkdir()
        tar = build_rootfs(work)
        root = work / "rootfs"
        root.mkdir()
        with step("unpack rootfs"):
            nice(["tar", "--numeric-owner", "-C", str(root), "-xpf", str(tar)])
        with step("ssh key"):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeslim-boot", "-f", str(out / "id_ed25519")])
        with step("U-Boot environment (fdt_addr_r) in pflash1"):
            env = make_pflash(out / "pflash1.img", work)
        with step("DTB: QEMU virt + Jetson identity, carve-outs, display/camera nodes"):
            dtb = make_dtb(variant, work, out / "pflash1.img")
        with step("customise rootfs"):
            kver = customise(root, variant, dtb, (out / "id_ed25519.pub").read_text(), work)
        with step("disk image (ext4 -d, GPT, qcow2)"):
            make_disk(root, work, out / "base.qcow2")
        unmount_under(root)
        manifest = {
            "recipe": dest.name, "built": time.strftime("%FT%TZ", time.gmtime()), "suite": SUITE,
            "kernel": kver, "dtb": f"/boot/dtb/kernel_{variant['dtb']}", "variant": variant["name"],
            "machine": qemu.machine_args(), "host_packages": pkg_versions().split(), "uboot_env": env,
            "steps": STEPS, "seconds": round(time.monotonic() - t0, 1),
        }  # fmt: skip
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(out, dest)
    log(f"built {dest} in {manifest['seconds']} s")


def ensure(force: bool = False) -> Path:
    """The cached image directory, built first when missing (one build at a time: flock)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    dest = CACHE / recipe_hash()
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not (dest / "manifest.json").exists():
            build(dest)
            prune(keep=dest)
    return dest


def prune(keep: Path, images: int = 2) -> None:
    """Drop older images (~0.8 GB each): keep this one and the newest others up to `images`."""
    others = sorted((d for d in CACHE.iterdir() if d.is_dir() and (d / "manifest.json").exists() and d != keep),
                    key=lambda d: d.stat().st_mtime, reverse=True)  # fmt: skip
    for old in others[images - 1 :]:
        log(f"pruning old image {old.name}")
        shutil.rmtree(old, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache has this recipe")
    parser.add_argument("--print-dir", action="store_true", help="print the image directory, build nothing")
    parser.add_argument("--mmdebstrap-hook", nargs=2, metavar=("PHASE", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mmdebstrap_hook:
        phase, root = args.mmdebstrap_hook
        {"essential": hook_essential, "customize": hook_customize}[phase](Path(root))
        return 0
    if args.print_dir:
        print(CACHE / recipe_hash())
        return 0
    print(ensure(args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
