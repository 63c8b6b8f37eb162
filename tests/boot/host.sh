#!/usr/bin/env bash
# Prepare this machine for the emulated-boot lane (tests/boot, docs/emulated-boot.md): Debian packages for
# building an arm64 guest with mmdebstrap + qemu-user-static and booting it with QEMU TCG + U-Boot.
# Idempotent; called by `make test-boot`. Package list: docs/emulated-boot.md (emulated image).
set -euo pipefail

PACKAGES=(
  qemu-system-arm      # qemu-system-aarch64 (TCG: no arm64 KVM on x86 hosts)
  qemu-utils           # qemu-img: overlays, qcow2 conversion
  qemu-user-static     # runs the arm64 maintainer scripts in the build chroot (binfmt_misc)
  binfmt-support       # update-binfmts
  u-boot-qemu          # /usr/lib/u-boot/qemu_arm64/u-boot.bin: the bootloader that reads extlinux.conf
  u-boot-tools         # mkenvimage: U-Boot environment with fdt_addr_r (trap 1)
  mmdebstrap           # arm64 rootfs: host apt resolves and downloads, only dpkg runs under qemu-user
  arch-test            # mmdebstrap checks that binfmt runs arm64 binaries before it starts
  device-tree-compiler # dtc
  fdisk                # sfdisk: GPT
  e2fsprogs            # mkfs.ext4 -d (no loop device needed)
  openssh-client
  cpp                  # DTS #include, as tests/sim does
)

die() { echo "boot-host: $*" >&2; exit 1; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "must run as root to install ${missing[*]} (or install them yourself)"
  echo "boot-host: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# binfmt_misc: mounted and qemu-aarch64 registered. Containers running systemd (molecule) can flush every host
# entry (systemd-binfmt), so the image builder re-runs this check before the chroot stage too.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  update-binfmts --enable qemu-aarch64 || die "cannot register qemu-aarch64 with binfmt_misc"
fi
for f in qemu-system-aarch64 qemu-img mkenvimage sfdisk mkfs.ext4 dtc mmdebstrap; do
  command -v "$f" >/dev/null || die "$f missing after install"
done
[ -r /usr/lib/u-boot/qemu_arm64/u-boot.bin ] || die "u-boot.bin for qemu_arm64 missing"
echo "boot-host: ready ($(qemu-system-aarch64 --version | head -n 1), binfmt qemu-aarch64 $(head -n 1 /proc/sys/fs/binfmt_misc/qemu-aarch64))"
