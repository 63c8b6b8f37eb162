"""After a run whose controller was killed once apply had armed the deadline: the device restored the run by itself
(converge waited for it, nobody touched the device) and is as prepare recorded it."""

from __future__ import annotations

import re


def before(host) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"default_target": [], "unit": [], "boot": []}
    for line in host.file("/root/es-before.txt").content_string.splitlines():
        kind, rest = line.split(" ", 1)
        out[kind].append(rest)
    return out


def test_units_and_default_target_are_as_before(host):
    was = before(host)
    assert host.check_output("systemctl get-default") == was["default_target"][0]
    for line in was["unit"]:
        unit = line.split()[0]
        enabled = host.run(f"systemctl is-enabled {unit}").stdout.strip()
        active = host.run(f"systemctl is-active {unit}").stdout.strip()
        assert f"{unit} {enabled} {active}" == line


BACKUP = re.compile(r"/boot/extlinux/extlinux\.conf\.edgeslim-\d{8}T\d{12}Z\.bak$")


def test_every_boot_file_is_byte_identical(host):
    # extlinux.conf, the DTBs, nothing added under /boot (no managed entry, no overlay): only the dated backups of
    # extlinux.conf that every write keeps (the last backup_keep, 3 by default), one of them the stock file
    now = host.check_output("find /boot -type f -exec sha256sum {} + | sort -k2").splitlines()
    backups = [line for line in now if BACKUP.search(line)]
    assert [line for line in now if line not in backups] == before(host)["boot"]
    stock = next(line.split()[0] for line in before(host)["boot"] if line.endswith("/boot/extlinux/extlinux.conf"))
    assert 0 < len(backups) <= 3
    assert stock in {line.split()[0] for line in backups}


def test_nothing_is_pending_or_armed(host):
    assert host.run("ls /var/lib/edgeslim/deadline/*.json").rc != 0
    assert host.check_output("systemctl list-units --all --plain --no-legend 'edgeslim-deadline-*'") == ""
    assert host.check_output("systemctl list-units --all --plain --no-legend 'edgeslim-lock-*'") == ""
    # no boot layer waits for a verdict, and the boot-commit checker is gone with the last pending record
    assert host.check_output("find /var/lib/edgeslim -path '*/pending/*' -type f") == ""
    assert not host.file("/etc/systemd/system/edgeslim-boot-commit.service").exists


def test_the_lock_is_free(host):
    assert host.run("flock -n /run/edgeslim/device.lock true").rc == 0


def test_the_metrics_say_rolled_back(host):
    text = host.file("/var/lib/node_exporter/textfile_collector/edgeslim.prom").content_string
    lines = [line for line in text.splitlines() if line.startswith("edgeslim_last_run_result{")]
    assert any('result="rolled_back"' in line and line.endswith(" 1") for line in lines), lines


def test_the_restore_ran_on_the_device(host):
    # the restore program's own log (the transient service is collected; its journal stays)
    log = host.check_output("journalctl --no-pager -o cat -u 'edgeslim-deadline-*' 2>/dev/null || true")
    assert "restore" in log.lower(), log
