"""The managed entry carried swiotlb=2048 as DEFAULT with the stock entry intact; rollback restored the file."""

from __future__ import annotations

import json
import re


def test_slimmed_file(host):
    slim = host.file("/root/extlinux.conf.slim").content_string
    stock = host.file("/root/extlinux.conf.stock").content_string
    assert "DEFAULT edgeslim\n" in slim
    assert "LABEL edgeslim\n" in slim and "LABEL primary\n" in slim
    managed = slim.split("LABEL edgeslim\n", 1)[1].split("LABEL primary", 1)[0]
    assert "swiotlb=2048" in managed
    # The stock entry is byte-identical to the original one.
    stock_entry = stock.split("LABEL primary\n", 1)[1].split("\n\n", 1)[0]
    assert stock_entry in slim.split("LABEL primary\n", 1)[1]


def test_rollback_restored_the_file_byte_identical(host):
    assert host.file("/boot/extlinux/extlinux.conf").content == host.file("/root/extlinux.conf.stock").content


def test_journal_layer_cleared(host):
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    assert "swiotlb" not in journal["layers"]


def _standin_sig(host, path: str) -> str:
    digest = host.check_output(f"sha256sum {path} | cut -d' ' -f1")
    return f"edgeslim-standin-signature sha256:{digest}\n"


def test_secure_boot_the_slimmed_file_was_signed_before_it_was_armed(host):
    # the .sig the stand-in hook wrote next to extlinux.conf matched the slimmed file (kept aside before rollback)
    assert host.file("/root/extlinux.conf.slim.sig").content_string == _standin_sig(host, "/root/extlinux.conf.slim")


def test_secure_boot_the_restored_file_is_signed_again(host):
    sig = host.file("/boot/extlinux/extlinux.conf.sig")
    assert sig.exists and sig.content_string == _standin_sig(host, "/boot/extlinux/extlinux.conf")
    assert not host.file("/boot/extlinux/extlinux.conf.sig.edgeslim-prev").exists


def test_bad_boot_layer_inputs_refused_by_the_engine_all_at_once(host):
    log = re.sub(r"\x1b\[[0-9;]*m", "", host.file("/root/slim-bad-inputs.log").content_string)  # Molecule forces colour
    assert "Refuse the layers' inputs (nothing was changed)" in log
    assert "swiotlb_size_mib: SWIOTLB size 0 MiB refused" in log
    assert "carveout recipes ['no_gpu'] refused: only the validated recipes headless and no_camera" in log
    assert "edgeslim.jetson.services : Restore every unit" not in log  # refused before any change: no rollback
    assert re.search(r"es-swiotlb-1\s*:.* failed=1", log)


def test_bad_boot_layer_inputs_changed_nothing(host):
    before = host.file("/root/state-before-bad-inputs.txt").content_string
    # the comparison means something: the desktop was up, its units enabled, the stock file in place
    assert "default: graphical.target" in before
    assert re.search(r"^active: gdm\.service [0-9a-f]{32}$", before, re.M)
    assert re.search(r"^file: colord\.service (enabled|static|disabled)$", before, re.M)
    assert host.file("/root/state-after-bad-inputs.txt").content_string == before
    # and the desktop has kept the same run since (never stopped and started again)
    gdm = host.check_output("systemctl show -p InvocationID --value gdm.service")
    assert f"active: gdm.service {gdm}\n" in before
