"""slim with both boot layers -> one reboot -> commit on the device; a re-run (Molecule's idempotence step) changed
nothing and did not reboot; then the rollback entry point restored the stock file and removed the boot-time checker.
The container runs the host's kernel, so the boot layers must say "unverified_container"; MemTotal is the simulated
boot's (tests/sim/boot_standin.py books the entry the container booted), so their reclaimed_mb is measured."""

from __future__ import annotations

import json
import os

STOCK_KB = int(os.environ.get("EDGESLIM_SIM_MEMTOTAL_MIB_ORIN_NANO_8GB", "7620")) * 1024
# The emulated lane's formulas for what the managed entry boots: swiotlb=2048 instead of the default 32768 slots,
# (32768 - 2048) x 2072 B; the display disabled, so no 32 MiB no-map early-boot framebuffer: 32 MiB - 32 MiB/512.
SWIOTLB_KB, FRAMEBUFFER_KB = 62160, 32704


def test_device_committed_after_the_reboot(host):
    verdict = json.loads(host.file("/var/lib/edgeslim/boot-commit/swiotlb.json").content_string)
    assert verdict["status"] == "committed" and verdict["failures"] == []
    assert verdict["boots"] == 1
    # /proc/cmdline is the host's here: the check is reported as impossible, never as passed.
    assert any("not possible in a container" in n for n in verdict["notes"])


def test_layers_reported_unverified_with_the_measured_memtotal(host):
    """Never "applied" (the kernel checks were impossible); the megabytes are the MemTotal the simulated boot gave,
    split as slim splits one shared reboot: SWIOTLB its formula share, carveouts the rest."""
    swiotlb = json.loads(host.file("/root/swiotlb-result.json").content_string)
    assert swiotlb == {"status": "unverified_container", "reclaimed_mb": round(SWIOTLB_KB / 1024, 1)}
    carveouts = json.loads(host.file("/root/carveouts-result.json").content_string)
    assert carveouts["status"] == "unverified_container"
    assert carveouts["reclaimed_mb"] == round((SWIOTLB_KB + FRAMEBUFFER_KB) / 1024 - round(SWIOTLB_KB / 1024, 1), 1)
    committed = int(host.file("/root/memtotal-committed").content_string.split()[1])
    assert committed == STOCK_KB + SWIOTLB_KB + FRAMEBUFFER_KB


def test_rollback_boot_is_back_to_the_stock_memtotal(host):
    assert int(host.file("/proc/meminfo").content_string.split("MemTotal:", 1)[1].split()[0]) == STOCK_KB


def test_rerun_with_reboots_allowed_did_not_reboot(host):
    """Two runs of the converge play: the first rebooted once into the managed entry, the second (idempotence, with
    edgeslim_reboot_ok true) started and ended in that same boot."""
    runs = [line.split() for line in host.file("/root/converge-boots").content_string.splitlines()]
    assert [run[0] for run in runs] == ["start", "end", "start", "end"], runs
    first_start, first_end, second_start, second_end = (run[1] for run in runs)
    assert first_start != first_end  # the first run rebooted
    assert first_end == second_start == second_end  # the re-run did not
    # One boot checked and committed per layer, both at the first run's reboot; the re-run armed nothing.
    for layer in ("swiotlb", "carveouts"):
        verdict = json.loads(host.file(f"/var/lib/edgeslim/boot-commit/{layer}.json").content_string)
        assert verdict["status"] == "committed" and verdict["boots"] == 1, verdict


def test_committed_file_had_managed_default_and_stock_fallback(host):
    committed = host.file("/root/extlinux.conf.committed").content_string
    stock = host.file("/root/extlinux.conf.stock").content_string
    assert "DEFAULT edgeslim" in committed
    assert "LABEL primary" in committed and "LABEL edgeslim" in committed
    managed = committed.split("LABEL edgeslim", 1)[1].split("LABEL primary", 1)[0]
    assert "swiotlb=2048" in managed and "OVERLAYS /boot/edgeslim/carveouts.dtbo" in managed
    # one identity for the entry both layers share, whichever wrote last
    assert "MENU LABEL edgeslim: slimmed boot entry" in managed
    # the stock entry is untouched: every stock line is still in the file
    for line in stock.splitlines():
        if not line.startswith("DEFAULT"):
            assert line in committed


def test_rollback_restored_stock_and_removed_the_checker(host):
    assert host.file("/boot/extlinux/extlinux.conf").content == host.file("/root/extlinux.conf.stock").content
    assert not host.file("/etc/systemd/system/edgeslim-boot-commit.service").exists
    assert not host.file("/var/lib/edgeslim/pending/swiotlb.json").exists


def test_rollback_rebooted_by_the_layer_policy(host):
    # edgeslim_reboot_ok false, swiotlb_reboot_ok true: the restored entry is booted now, not at the next boot.
    before = host.file("/root/boot-before-rollback").content_string.strip()
    now = host.check_output("awk '{print $22}' /proc/1/stat").strip()
    assert before and now != before


def test_device_lock_taken_again_after_the_rollback_reboot_then_released(host):
    # Each reboot empties /run: a holder unit in this boot's journal is the rollback's re-take after its reboot.
    this_boot = host.run("journalctl -b --no-pager -o cat -u 'edgeslim-lock-*'").stdout
    assert "/run/edgeslim/device.lock" in this_boot, this_boot
    assert host.run("systemctl list-units --all --plain --no-legend 'edgeslim-lock-*'").stdout.strip() == ""
    assert not host.file("/run/edgeslim/device.json").exists
    assert host.run("flock --nonblock --conflict-exit-code 75 /run/edgeslim/device.lock true").rc == 0
