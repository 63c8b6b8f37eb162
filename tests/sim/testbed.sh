#!/usr/bin/env bash
# Prepare this machine to run simulated Jetsons: Debian packages, lxcfs, kernel limits.
# Idempotent; called by `make host` (and so by `make test` / `make demo`). See docs/development.md.
set -euo pipefail

# chromium + a font: the unit lane renders the HTML fleet report headless and checks the screenshot.
PACKAGES=(podman runc debootstrap device-tree-compiler lxcfs gcc libc6-dev shellcheck chromium fonts-dejavu-core)
LXCFS_DIR=/var/lib/lxcfs
# Each systemd container takes ~6 inotify instances; the default 128 hangs fleets above ~20 hosts.
INOTIFY_MIN=1024

die() { echo "testbed: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] && return 0
  die "must run as root to $1 (missing: $2). Run 'sudo make host' once, or install it yourself."
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  need_root "install Debian packages" "${missing[*]}"
  echo "testbed: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! mountpoint -q "$LXCFS_DIR" || [ ! -r "$LXCFS_DIR/proc/meminfo" ]; then
  need_root "start lxcfs" "lxcfs mounted on $LXCFS_DIR"
  # A stale FUSE mount (lxcfs died: "Transport endpoint is not connected") must be
  # lazily unmounted first; even mkdir/stat fail on it.
  umount -l "$LXCFS_DIR" 2>/dev/null || fusermount -uz "$LXCFS_DIR" 2>/dev/null || true
  mkdir -p "$LXCFS_DIR"
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start lxcfs || true
  fi
  if ! mountpoint -q "$LXCFS_DIR"; then
    setsid lxcfs "$LXCFS_DIR" >/var/log/edgeslim-lxcfs.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 50); do [ -r "$LXCFS_DIR/proc/meminfo" ] && break; sleep 0.1; done
  [ -r "$LXCFS_DIR/proc/meminfo" ] || die "lxcfs did not come up on $LXCFS_DIR (see /var/log/edgeslim-lxcfs.log)"
  echo "testbed: lxcfs running on $LXCFS_DIR"
fi

# The simulated devices run each JetPack release's Python (tests/sim/image/pythons.txt), copied from pyenv by the
# image build; building them takes minutes each, so this check reports and does not install.
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
missing=()
while read -r version _; do
  case $version in ''|'#'*) continue ;; esac
  [ -x "$pyenv_root/versions/$version/bin/python${version%.*}" ] || missing+=("$version")
done < "$(dirname "$0")/image/pythons.txt"
if [ "${#missing[@]}" -gt 0 ]; then
  die "missing Python ${missing[*]} under $pyenv_root/versions (the simulated JetPack 5/6/7 devices run them).
Install with pyenv (https://github.com/pyenv/pyenv): for v in ${missing[*]}; do pyenv install \$v; done"
fi

cur=$(cat /proc/sys/fs/inotify/max_user_instances)
if [ "$cur" -lt "$INOTIFY_MIN" ]; then
  need_root "raise fs.inotify.max_user_instances" "$INOTIFY_MIN (now $cur)"
  sysctl -q -w fs.inotify.max_user_instances="$INOTIFY_MIN"
  echo "testbed: fs.inotify.max_user_instances $cur -> $INOTIFY_MIN"
fi
# The simulated boot (tests/sim/boot_standin.py): a podman OCI hook that accounts each simulated Jetson's booted
# extlinux.conf entry into its MemTotal at every start. Registered in tests/sim/containers.conf's hooks_dir; it runs
# only for containers annotated io.edgeslim.sim.boot (the stand-in of the checkout that started them).
HOOKS_HOME=/var/lib/edgeslim-sim
hook_json='{"version": "1.0.0", "hook": {"path": "/usr/bin/python3", "args": ["python3", "'$HOOKS_HOME'/boot_hook.py"]}, "when": {"annotations": {"^io\\.edgeslim\\.sim\\.boot$": ".+"}}, "stages": ["createRuntime"]}'
src_hook="$(dirname "$0")/boot_hook.py"
if ! cmp -s "$src_hook" "$HOOKS_HOME/boot_hook.py" || [ "$(cat "$HOOKS_HOME/hooks.d/edgeslim-sim-boot.json" 2>/dev/null)" != "$hook_json" ]; then
  need_root "install the simulated boot's OCI hook" "$HOOKS_HOME/hooks.d/edgeslim-sim-boot.json"
  mkdir -p "$HOOKS_HOME/hooks.d"
  install -m 0755 "$src_hook" "$HOOKS_HOME/boot_hook.py"
  printf '%s\n' "$hook_json" > "$HOOKS_HOME/hooks.d/edgeslim-sim-boot.json"
  echo "testbed: simulated boot hook installed in $HOOKS_HOME"
fi

echo "testbed: ready (podman $(podman --version | awk '{print $3}'), lxcfs, inotify $(cat /proc/sys/fs/inotify/max_user_instances), Python $(awk '/^[0-9]/{print $1}' "$(dirname "$0")/image/pythons.txt" | paste -sd " "))"
