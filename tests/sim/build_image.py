"""Build the simulated-Jetson container image from Debian packages (no registry), cached by a recipe hash.

    python tests/sim/build_image.py            # build if missing, print the tag
    python tests/sim/build_image.py --print-tag

Stages: (1) a debootstrap base (systemd, sshd, real Debian daemons), cached as a tarball keyed by its package list;
(2) our layer: the static simulated daemon, unit files rendered from image/services.yml, the L4T variants
(identity, extlinux.conf, DTB, an nvidia-l4t-core .deb) installed at first boot, the `nvidia` sudo user, and
the Python of each JetPack release (copied from the host's pyenv; /usr/bin/python3 is the variant's at boot);
(3) `podman import` with the systemd CMD. The tag hashes every recipe file (the interpreter versions are in
image/pythons.txt), so a change rebuilds.
See docs/development.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
IMAGE_REPO = "localhost/edgeslim/jetson-sim"
SUITE = "bookworm"
MIRROR = os.environ.get("EDGESLIM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# libpam-systemd provides logind, which polkitd (pulled by modemmanager) and `shutdown -r` (reboot) need.
PACKAGES = [
    "systemd", "systemd-sysv", "libpam-systemd", "dbus", "python3", "procps", "iproute2", "openssh-server", "sudo",
    "avahi-daemon", "rpcbind", "cups-daemon", "modemmanager",
]  # fmt: skip
RECIPE = [
    Path(__file__),
    HERE / "image",
    HERE / "variants",
]
SIMD = "/usr/local/sbin/edgeslim-simd"
PYTHONS_FILE = HERE / "image/pythons.txt"
JETPACK_PYTHON_DIR = "opt/jetpack-python"
# Debian's own interpreter, kept for Debian's tools once /usr/bin/python3 is the release's interpreter.
DEBIAN_PYTHON = "python3.11"
# Left out of the copied interpreters: test suites, GUI/IDE, bundled pip wheels, build-only files, optimised .pyc.
PYTHON_PRUNE = {
    "test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "pydoc_data",
    "lib2to3", "distutils", "venv",
}  # fmt: skip
UNIT_DIR = "usr/lib/systemd/system"


def log(msg: str) -> None:
    print(f"build-image: {msg}", flush=True)


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kw)


def hash_files(h: Any, roots: list[Path], base: Path) -> None:
    """Feed every file under ``roots`` (path relative to ``base``, then content) into ``h``, in a stable order."""
    for root in roots:
        files = sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file())
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(base)).encode())
            h.update(f.read_bytes())


def recipe_hash() -> str:
    h = hashlib.sha256()
    h.update(" ".join([SUITE, *PACKAGES]).encode())
    hash_files(h, RECIPE, HERE)
    return h.hexdigest()[:12]


def image_tag() -> str:
    return f"{IMAGE_REPO}:{recipe_hash()}"


def image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], check=False).returncode == 0


def base_tarball() -> Path:
    """debootstrap once per package list; reuse the tarball across recipe changes (saves ~70 s)."""
    key = hashlib.sha256(" ".join([SUITE, MIRROR, *PACKAGES]).encode()).hexdigest()[:12]
    tar = CACHE / f"base-{SUITE}-{key}.tar"
    if tar.exists():
        log(f"reusing debootstrap base {tar.name}")
        return tar
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="debootstrap-") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrap {SUITE} ({len(PACKAGES)} extra packages) ...")
        run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE, str(root), MIRROR],
            stdout=subprocess.DEVNULL)  # fmt: skip
        # Trim what a container never needs (apt lists, docs, man pages).
        for sub in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/locale"):
            shutil.rmtree(root / sub, ignore_errors=True)
            (root / sub).mkdir(parents=True, exist_ok=True)
        run(["tar", "-C", str(root), "-cf", str(tar) + ".part", "."])
        os.replace(str(tar) + ".part", tar)
    return tar


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def render_unit(unit: dict[str, Any]) -> str:
    name, kind = unit["name"], unit["kind"]
    desc = unit.get("description", name)
    lines = ["[Unit]", f"Description={desc}", f"# edgeslim simulation; source: {unit.get('source', 'n/a')}"]
    if unit.get("part_of"):
        lines += [f"PartOf={unit['part_of']}", f"After={unit['part_of']}"]
    lines += ["After=edgeslim-sim-firstboot.service", "", "[Service]"]
    if kind == "sim":
        lines += ["Type=simple", f"ExecStart={SIMD} {unit['size_mib']}"]
    elif kind == "oneshot":
        lines += ["Type=oneshot", "RemainAfterExit=yes", "ExecStart=/bin/true"]
    else:
        raise ValueError(f"{name}: kind {kind!r} is not rendered here")
    if not unit.get("static"):
        lines += ["", "[Install]", f"WantedBy={unit.get('wanted_by', 'multi-user.target')}"]
    return "\n".join(lines) + "\n"


def render_socket(unit: dict[str, Any]) -> str:
    stem = unit["name"].removesuffix(".service")
    return (
        f"[Unit]\nDescription=Socket for {unit['name']} (edgeslim simulation)\n\n"
        f"[Socket]\nListenStream=/run/{stem}.socket\nSocketMode=0666\n\n[Install]\nWantedBy=sockets.target\n"
    )


FIRSTBOOT = """#!/bin/sh
# Runs at every boot of a simulated Jetson. The fleet tool passes EDGESLIM_SIM_VARIANT and EDGESLIM_SIM_SCALE as
# container environment (PID 1's); units do not inherit it, so read /proc/1/environ.
set -eu
env_of() { tr '\\0' '\\n' < /proc/1/environ | sed -n "s/^$1=//p" | head -n 1; }
variant=$(env_of EDGESLIM_SIM_VARIANT); variant=${variant:-orin-nano-8gb}
scale=$(env_of EDGESLIM_SIM_SCALE); scale=${scale:-1.0}
mkdir -p /etc/edgeslim-sim
printf '%s\\n' "$scale" > /etc/edgeslim-sim/scale
src=/usr/share/edgeslim-sim/variants/$variant
[ -d "$src" ] || { echo "unknown variant $variant" >&2; exit 1; }
if [ "$(cat /etc/edgeslim-sim/variant 2>/dev/null)" != "$variant" ]; then
  install -m 0644 "$src/nv_tegra_release" /etc/nv_tegra_release
  mkdir -p /boot/extlinux /boot/dtb
  install -m 0644 "$src/extlinux.conf" /boot/extlinux/extlinux.conf
  install -m 0644 "$src"/kernel_*.dtb /boot/dtb/
  dpkg -i "$src/nvidia-l4t-core.deb" >/dev/null
  printf '%s\\n' "$variant" > /etc/edgeslim-sim/variant
fi
# As on the release: /usr/bin/python3 is its Python (Debian's tools are pinned to python3.11 in the image).
ln -sfn "python$(cat "$src/python")" /usr/bin/python3
"""

FIRSTBOOT_UNIT = """[Unit]
Description=edgeslim simulation: install the variant identity and the memory scale
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/edgeslim-sim-firstboot

[Install]
WantedBy=sysinit.target
"""

EXTLINUX = """TIMEOUT 30
DEFAULT primary

MENU TITLE L4T boot options

LABEL primary
      MENU LABEL primary kernel
      LINUX /boot/Image
      FDT /boot/dtb/kernel_{dtb}
      INITRD /boot/initrd
      APPEND ${{cbootargs}} root=PARTUUID={partuuid} rw rootwait rootfstype=ext4 mminit_loglevel=4 \
console={console} firmware_class.path=/etc/firmware fbcon=map:0 nospectre_bhb video=efifb:off console=tty0

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


def compile_dts(dts: Path, out: Path) -> None:
    """cpp (for #include) then dtc, as L4T's build does for kernel DTBs."""
    pre = subprocess.run(["cpp", "-nostdinc", "-undef", "-x", "assembler-with-cpp", "-P", str(dts)],
                         check=True, capture_output=True)  # fmt: skip
    run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(out), "-"], input=pre.stdout)


def build_deb(variant: dict[str, Any], out: Path) -> None:
    """A real (tiny) nvidia-l4t-core package so dpkg-query answers as on a Jetson. Architecture 'all' because
    the simulated device is an x86 container; the version string is the real one for the release."""
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp)
        write(pkg / "DEBIAN/control", (
            "Package: nvidia-l4t-core\n"
            f"Version: {variant['l4t_core_version']}\n"
            "Architecture: all\nMaintainer: edgeslim simulation <sim@edgeslim.invalid>\n"
            "Section: misc\nPriority: optional\n"
            "Description: NVIDIA Core Package (edgeslim simulation marker)\n"
        ))  # fmt: skip
        write(pkg / "usr/share/edgeslim-sim/l4t-core-marker", variant["name"] + "\n")
        run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(pkg), str(out)], stdout=subprocess.DEVNULL)


def jetpack_pythons() -> list[str]:
    """Exact interpreter versions from image/pythons.txt, e.g. ['3.8.18', '3.10.13', '3.12.1']."""
    lines = (line.split("#", 1)[0].split() for line in PYTHONS_FILE.read_text().splitlines())
    return [words[0] for words in lines if words]


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def pyenv_root() -> Path:
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def missing_pythons() -> list[str]:
    """A line per interpreter the host lacks (tests/sim/testbed.sh runs the same check)."""
    out = []
    for version in jetpack_pythons():
        exe = pyenv_root() / "versions" / version / "bin" / f"python{minor(version)}"
        if not os.access(exe, os.X_OK):
            out.append(f"Python {version} ({exe} not found): install it with `pyenv install {version}`")
    return out


def prune_python(directory: str, names: list[str]) -> set[str]:
    drop = {n for n in names if n in PYTHON_PRUNE or n.startswith("config-") or ".opt-" in n}
    # Extension modules for Tk and CPython's own test hooks (_testcapi, _xxtestfuzz ...).
    drop |= {n for n in names if n.endswith(".so") and (n.startswith(("_tkinter", "_test", "_xxtest", "xx")))}
    return drop


def install_pythons(root: Path) -> list[str]:
    """Each JetPack release's interpreter under /opt/jetpack-python/<minor>, with /usr/bin/python<minor>.

    pyenv builds them --enable-shared with a RUNPATH into the host's pyenv, which the image lacks: libpython is
    found through ld.so.conf instead. The interpreter locates its stdlib relative to its own executable, so the
    tree is relocatable."""
    libdirs, names = [], []
    for version in jetpack_pythons():
        mm = minor(version)
        src = pyenv_root() / "versions" / version
        dest = root / JETPACK_PYTHON_DIR / mm
        (dest / "bin").mkdir(parents=True)
        shutil.copy2(src / "bin" / f"python{mm}", dest / "bin" / f"python{mm}")
        shutil.copytree(src / "lib" / f"python{mm}", dest / "lib" / f"python{mm}", ignore=prune_python)
        for lib in (src / "lib").glob(f"libpython{mm}*.so.*"):  # the runtime soname, not the link-time .so
            shutil.copy2(lib, dest / "lib" / lib.name)
        libdirs.append(f"/{JETPACK_PYTHON_DIR}/{mm}/lib")
        (root / "usr/bin" / f"python{mm}").symlink_to(f"/{JETPACK_PYTHON_DIR}/{mm}/bin/python{mm}")
        names.append(version)
    # pyenv keeps debug info (libpython3.12: 30 MB with it, 8 MB without): strip it for a smaller image.
    elves = [
        p for p in (root / JETPACK_PYTHON_DIR).rglob("*") if p.is_file() and (".so" in p.name or p.parent.name == "bin")
    ]
    run(["strip", "--strip-debug", *map(str, elves)])
    run(["chmod", "-R", "u=rwX,go=rX", str(root / JETPACK_PYTHON_DIR)])
    write(root / "etc/ld.so.conf.d/jetpack-python.conf", "\n".join(libdirs) + "\n")
    run(["ldconfig", "-r", str(root)])
    # Debian's scripts say #!/usr/bin/python3 and import Debian's modules: pin them to Debian's interpreter.
    for top in ("usr/bin", "usr/sbin", "usr/share"):
        for f in (root / top).rglob("*"):
            if not f.is_file() or f.is_symlink():
                continue
            with open(f, "rb") as fh:
                head = fh.readline()
            if head.rstrip() in (b"#!/usr/bin/python3", b"#! /usr/bin/python3"):
                f.write_bytes(f"#!/usr/bin/{DEBIAN_PYTHON}\n".encode() + f.read_bytes()[len(head) :])
    # Each interpreter must start and load the extension modules Ansible modules use, as the non-root user.
    for version in names:
        prefix = f"/{JETPACK_PYTHON_DIR}/{minor(version)}"
        check = (
            "import sys, ssl, ctypes, hashlib, json, lzma, bz2, zlib, sqlite3, selectors, subprocess; "
            f"assert sys.version.split()[0] == {version!r}, sys.version; assert sys.prefix == {prefix!r}, sys.prefix"
        )
        run(["chroot", "--userspec=65534:65534", str(root), f"/usr/bin/python{minor(version)}", "-c", check])
    return names


def install_variants(root: Path) -> list[str]:
    names = []
    for vdir in sorted(p for p in (HERE / "variants").iterdir() if (p / "variant.yml").exists()):
        variant = yaml.safe_load((vdir / "variant.yml").read_text())
        dest = root / "usr/share/edgeslim-sim/variants" / variant["name"]
        dest.mkdir(parents=True)
        write(dest / "nv_tegra_release", variant["nv_tegra_release"])
        compile_dts(vdir / "board.dts", dest / f"kernel_{variant['dtb']}")
        partuuid = hashlib.md5(variant["name"].encode()).hexdigest()  # stable per variant, UUID-shaped
        partuuid = f"{partuuid[:8]}-{partuuid[8:12]}-{partuuid[12:16]}-{partuuid[16:20]}-{partuuid[20:32]}"
        stock = variant.get("extlinux") or EXTLINUX.format(dtb=variant["dtb"], partuuid=partuuid,
                                                           console=variant["console"])  # fmt: skip
        write(dest / "extlinux.conf", stock)
        build_deb(variant, dest / "nvidia-l4t-core.deb")
        if str(variant["python"]) not in [minor(v) for v in jetpack_pythons()]:
            sys.exit(f"build-image: variant {variant['name']}: python {variant['python']} is not in {PYTHONS_FILE}")
        write(dest / "python", f"{variant['python']}\n")
        names.append(variant["name"])
    return names


def customise(root: Path) -> None:
    services = yaml.safe_load((HERE / "image/services.yml").read_text())["units"]
    # Simulated daemon: static so it needs nothing from the image and its PSS is ~ its payload.
    run(["gcc", "-O2", "-Wall", "-static", "-o", str(root / SIMD.lstrip("/")), str(HERE / "image/edgeslim-simd.c")])
    write(root / "usr/local/sbin/edgeslim-sim-firstboot", FIRSTBOOT, 0o755)
    write(root / UNIT_DIR / "edgeslim-sim-firstboot.service", FIRSTBOOT_UNIT)
    enable = ["edgeslim-sim-firstboot.service"]
    for unit in services:
        if unit["kind"] == "debian":
            continue
        write(root / UNIT_DIR / unit["name"], render_unit(unit))
        for alias in unit.get("aliases", []):
            (root / UNIT_DIR / alias).symlink_to(unit["name"])
        if unit.get("socket"):
            write(root / UNIT_DIR / unit["name"].replace(".service", ".socket"), render_socket(unit))
            enable.append(unit["name"].replace(".service", ".socket"))
        if not unit.get("static"):
            enable.append(unit["name"])
    # ModemManager refuses to start in containers (ConditionVirtualization=!container); it runs fine without a
    # modem, so the simulated device lifts that condition (an empty assignment resets the condition list).
    write(
        root / "etc/systemd/system/ModemManager.service.d/edgeslim-sim.conf",
        "[Unit]\n# edgeslim simulation: run the real daemon inside the container\nConditionVirtualization=\n",
    )
    # A container's systemd on this cgroup v1 host gets no "cgroup empty" notification, so the user manager an SSH
    # login starts (user@1000.service) holds every in-guest reboot for its stop timeout twice (final-sigterm, then
    # final-sigkill: 2 x 90 s measured) after its processes have exited. Real devices (cgroup v2) are not affected.
    write(
        root / "etc/systemd/system/user@.service.d/edgeslim-sim.conf",
        "[Service]\n# edgeslim simulation: no cgroup-empty notification in a cgroup v1 container\nTimeoutStopSec=5s\n",
    )
    # As on Ubuntu 22.04 / JetPack 6: gdm.service is static, gdm3.service an alias of it, and
    # display-manager.service (wanted by graphical.target) points at gdm3.service [AUDIT-AGX].
    (root / "etc/systemd/system/display-manager.service").symlink_to(f"/{UNIT_DIR}/gdm3.service")
    run(["systemctl", f"--root={root}", "enable", "--quiet", *enable])
    run(["systemctl", f"--root={root}", "set-default", "graphical.target"], stderr=subprocess.DEVNULL)
    # Units that cannot work in a container would leave the system "degraded" for no device-relevant reason.
    run(["systemctl", f"--root={root}", "mask", "--quiet", "systemd-udevd.service", "systemd-udevd-kernel.socket",
         "systemd-udevd-control.socket", "getty@tty1.service", "serial-getty@ttyS0.service"])  # fmt: skip
    log(f"interpreters: {', '.join(install_pythons(root))}")
    names = install_variants(root)
    log(f"variants: {', '.join(names)}")
    # L4T boot files: a kernel and initrd placeholder (the container boots the host kernel), an ESP-like dir.
    write(root / "boot/Image", "edgeslim simulated kernel image placeholder\n")
    write(root / "boot/initrd", "edgeslim simulated initrd placeholder\n")
    write(root / "boot/efi/EFI/BOOT/BOOTAA64.efi", "edgeslim simulated L4TLauncher placeholder\n")
    # The JetPack default user: passwordless sudo, key login (the key is mounted by the fleet tool).
    run(["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", "nvidia"])
    write(root / "etc/sudoers.d/90-nvidia", "nvidia ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    write(root / "etc/ssh/sshd_config.d/edgeslim.conf", (
        "# Keys come from the fleet tool (mounted read-only); no passwords.\n"
        "AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/edgeslim_authorized_keys\n"
        "PasswordAuthentication no\nUseDNS no\n"
    ))  # fmt: skip
    (root / "var/lib/edgeslim").mkdir(parents=True, exist_ok=True)


def build(tag: str) -> None:
    base = base_tarball()
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="image-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        run(["tar", "-C", str(root), "-xf", str(base)])
        customise(root)
        import_rootfs(root, tag)


def import_rootfs(root: Path, tag: str) -> None:
    """Import a customised root file system as the image `tag` (booting /sbin/init)."""
    log(f"importing {tag} ...")
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    run(["podman", "import", "--quiet", "--change", 'CMD ["/sbin/init"]', "-", tag], stdin=tar.stdout,
        stdout=subprocess.DEVNULL)  # fmt: skip
    if tar.wait() != 0:
        raise RuntimeError("tar of the rootfs failed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--print-tag", action="store_true", help="print the tag this recipe builds and exit")
    ap.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    args = ap.parse_args()
    tag = image_tag()
    if args.print_tag:
        print(tag)
        return 0
    if image_exists(tag) and not args.force:
        log(f"cached {tag}")
        print(tag)
        return 0
    if os.geteuid() != 0:
        print("build-image: debootstrap and chroot need root", file=sys.stderr)
        return 1
    missing = missing_pythons()
    if missing:
        print("build-image: the simulated devices run each JetPack release's Python; missing on this host:",
              *missing, "(see docs/development.md)", sep="\n  ", file=sys.stderr)  # fmt: skip
        return 1
    build(tag)
    log(f"built {tag}")
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
