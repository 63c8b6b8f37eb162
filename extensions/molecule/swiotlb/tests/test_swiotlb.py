"""The managed entry carried swiotlb=2048 as DEFAULT with the stock entry intact; rollback restored the file."""

from __future__ import annotations

import json


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
