#!/usr/bin/env bash
# `make check`, the loop before each commit (target: under 5 minutes on 2 cores): lint (ruff, ansible-lint, the
# device-Python guard), the host unit tests and the device unit tests (Python 3.8, 3.10, 3.12) run side by side --
# three single-threaded jobs on two cores instead of one after the other -- then one container scenario
# ($1, default facts: every simulated variant boots and its modules run on its release's Python).
# Each job's output is in build/check/<job>.log; a failed job's tail is printed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PATH=$PWD/.venv/bin:$PATH
scenario=${1:-facts}
logs=build/check
rm -rf "$logs" && mkdir -p "$logs"
start=$(date +%s)

job() {  # job NAME COMMAND...: runs in the background, leaves "<ok|FAILED> <seconds>" in $logs/NAME.rc
  local name=$1
  shift
  (
    t0=$(date +%s)
    if "$@" >"$logs/$name.log" 2>&1; then r=ok; else r=FAILED; fi
    echo "$r $(($(date +%s) - t0))" >"$logs/$name.rc"
  ) &
}

job lint make --no-print-directory lint
job unit-host pytest -q -p no:cacheprovider tests/unit
job unit-device bash tests/unit-device.sh
wait

failed=()
for name in lint unit-host unit-device; do
  read -r r s <"$logs/$name.rc"
  printf 'check: %-12s %-6s %4ss\n' "$name" "$r" "$s"
  if [ "$r" != ok ]; then
    failed+=("$name")
    tail -n 40 "$logs/$name.log"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "check: failed: ${failed[*]} (logs in $logs/); the scenario was not run"
  exit 1
fi
t0=$(date +%s)
make --no-print-directory image >"$logs/image.log" 2>&1 || { tail -n 40 "$logs/image.log"; exit 1; }
bash tests/molecule.sh "$scenario" >"$logs/molecule.log" 2>&1
rc=$?
printf 'check: %-12s %-6s %4ss\n' "$scenario" "$([ $rc -eq 0 ] && echo ok || echo FAILED)" $(($(date +%s) - t0))
[ $rc -eq 0 ] || tail -n 60 "$logs/molecule.log"
echo "check: total $(($(date +%s) - start)) s"
exit $rc
