#!/usr/bin/env bash
# Reliability of the emulated-boot lane (docs/emulated-boot.md): up to N whole-lane runs (`make test-boot`)
# in a row, stopping at the first failure. One line per run in build/boot/runs.log (commit, result, seconds, watchdog
# resets), each run's output in build/boot/run-<start>.log, then the lane's summary over results.jsonl.
set -uo pipefail
runs=${1:-5}
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [RUNS>=1]" >&2; exit 2; }
cd "$(dirname "$0")/../.." || exit 1
mkdir -p build/boot
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
if git status --porcelain 2>/dev/null | grep -qv '^??'; then dirty="+dirty"; fi
resets() { grep -h '"watchdog_resets"' build/boot/results.jsonl 2>/dev/null | grep -o '"watchdog_resets": [0-9]*' |
  awk '{s += $2} END {print s + 0}'; }
rc=0
for i in $(seq 1 "$runs"); do
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  before=$(resets)
  t0=$(date +%s)
  make test-boot >"build/boot/run-$stamp.log" 2>&1
  rc=$?
  line="$(date -u +%FT%TZ) commit $commit$dirty run $i/$runs rc $rc $(( $(date +%s) - t0 )) s,"
  line+=" watchdog resets $(( $(resets) - before )), $(grep -Eo '[0-9]+ (passed|failed)[^=]*' \
    "build/boot/run-$stamp.log" | tail -n 1)"
  echo "$line" | tee -a build/boot/runs.log
  [ "$rc" -eq 0 ] || break
done
.venv/bin/python tests/boot/lane.py
exit "$rc"
