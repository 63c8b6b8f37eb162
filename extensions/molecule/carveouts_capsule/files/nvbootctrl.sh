#!/bin/sh
# Stand-in for NVIDIA's nvbootctrl (output shape of `dump-slots-info`, NVIDIA forum threads 247290 and 306475).
# State: /var/lib/edgeslim-standin/bl_current (A|B); capsule_status (the "Capsule update status" the UEFI stand-in
# left, 0 when absent); /var/lib/edgeslim-standin/rootfs = the -t rootfs output (absent: rootfs A/B off, the call
# fails as on a non-A/B image).
S=/var/lib/edgeslim-standin
if [ "$1" = "-t" ] && [ "$2" = "rootfs" ]; then
  [ -s "$S/rootfs" ] || { echo "nvbootctrl: rootfs A/B is not enabled" >&2; exit 1; }
  shift 2
  [ "$1" = "dump-slots-info" ] && exec cat "$S/rootfs"
  echo "nvbootctrl stand-in: unsupported: -t rootfs $*" >&2
  exit 2
fi
if [ "$1" = "dump-slots-info" ]; then
  cur=$(cat "$S/bl_current")
  st=$(cat "$S/capsule_status" 2>/dev/null || echo 0)
  printf 'Current version: 36.4.7\nCapsule update status: %s\nCurrent bootloader slot: %s\nActive bootloader slot: %s\n' "$st" "$cur" "$cur"
  printf 'num_slots: 2\nslot: 0,             status: normal\nslot: 1,             status: normal\n'
  exit 0
fi
echo "nvbootctrl stand-in: unsupported: $*" >&2
exit 2
