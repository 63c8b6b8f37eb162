#!/usr/bin/env bash
# What the services and boot layers could change, in one comparable text: the default target, every unit file's
# enablement, every active service with the id of its current run (a unit stopped and started again gets a new
# InvocationID), and the boot files and the journal by checksum.
set -euo pipefail
echo "default: $(systemctl get-default)"
systemctl list-unit-files --no-legend --no-pager --type=service,socket,target | awk '{print "file:", $1, $2}' | sort
systemctl list-units --no-legend --no-pager --plain --type=service --state=active | awk '{print $1}' | sort \
  | while read -r unit; do echo "active: $unit $(systemctl show -p InvocationID --value "$unit")"; done
sha256sum /boot/extlinux/extlinux.conf /var/lib/edgeslim/journal.json 2>/dev/null || true
ls -1 /boot/extlinux /var/lib/edgeslim/pending 2>/dev/null || true
