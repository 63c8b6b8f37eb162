"""After slim + rollback: every unit, alias and the default target exactly as prepare left them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "sim"))
import simcheck


def test_every_unit_back_exactly(host):
    assert simcheck.check_units_as_recorded(host) == []


def test_aliases_and_default_target_back(host):
    assert simcheck.check_default_target(host) + simcheck.check_display_manager_aliases(host) == []


def test_journal_layer_cleared(host):
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    assert journal == {"version": 1, "layers": {}}


def test_journald_dropin_removed(host):
    assert not host.file("/etc/systemd/journald.conf.d/60-edgeslim.conf").exists
