#!/bin/sh
# Create N simulated daemons inside a systemd container (run inside it): es-sim-NN.service (enabled, running
# `sleep infinity`), every 4th one socket-activated-style with an enabled es-sim-NN.socket companion, every 5th
# one static (no [Install]) so only a mask keeps it down. Used by bench/services_bench.py. Usage: sh - N
set -eu
n=${1:-24}
i=1
while [ "$i" -le "$n" ]; do
  u=$(printf 'es-sim-%02d' "$i")
  install=$(printf '[Install]\nWantedBy=multi-user.target\n')
  if [ $((i % 5)) -eq 0 ]; then install=""; fi
  printf '[Unit]\nDescription=simulated daemon %s\n[Service]\nExecStart=/bin/sleep infinity\n%s\n' "$u" "$install" \
    > "/lib/systemd/system/$u.service"
  if [ $((i % 4)) -eq 0 ]; then
    printf '[Unit]\nDescription=socket of %s\n[Socket]\nListenStream=/run/%s.sock\nService=%s.service\n[Install]\nWantedBy=sockets.target\n' \
      "$u" "$u" "$u" > "/lib/systemd/system/$u.socket"
  fi
  i=$((i + 1))
done
systemctl daemon-reload
i=1
while [ "$i" -le "$n" ]; do
  u=$(printf 'es-sim-%02d' "$i")
  if [ $((i % 5)) -ne 0 ]; then systemctl enable -q "$u.service"; fi
  if [ $((i % 4)) -eq 0 ]; then systemctl enable -q --now "$u.socket"; fi
  systemctl start "$u.service"
  i=$((i + 1))
done
systemctl set-default graphical.target >/dev/null 2>&1
