#!/bin/sh
# Independent per-unit memory measurement for the services* verifiers (not the collection's code): for each unit
# given, sum Pss and Private_Clean+Private_Dirty (kB) from /proc/PID/smaps_rollup over the PIDs of its control
# group (cgroup v2 path, else the v1 systemd hierarchy), and Anonymous (what an exiting process gives back: its
# file pages stay in the page cache). Prints one JSON object {unit: {pss_kb, private_kb, anon_kb}}.
set -u
printf '{'
sep=''
for unit in "$@"; do
  cg=$(systemctl show -p ControlGroup --value "$unit")
  pss=0; priv=0; anon=0
  if [ -n "$cg" ]; then
    for f in "/sys/fs/cgroup$cg/cgroup.procs" "/sys/fs/cgroup/systemd$cg/cgroup.procs"; do
      [ -r "$f" ] || continue
      while read -r pid; do
        # shellcheck disable=SC2046  # word splitting of awk's two/three numbers is the point
        set -- $(awk '/^Pss:/{p=$2} /^Private_(Clean|Dirty):/{q+=$2} /^Anonymous:/{a=$2} END{print p+0, q+0, a+0}' \
          "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0 0 0)
        pss=$((pss + ${1:-0})); priv=$((priv + ${2:-0})); anon=$((anon + ${3:-0}))
      done < "$f"
      break
    done
  fi
  printf '%s"%s": {"pss_kb": %d, "private_kb": %d, "anon_kb": %d}' "$sep" "$unit" "$pss" "$priv" "$anon"
  sep=', '
done
printf '}\n'
