"""The fault sweep of the device-side writes: a power cut before every write primitive (and every systemctl call that
changes the system) of each operation, then the invariants on what is left (ops.py), the real rollback path and a
later run. `pytest -s tests/unit/faults` prints one line per operation: its injection points by primitive, the
violations found (none) and at how many cuts a temporary file of the cut write was left (a later run succeeds over
it). docs/reliability.md ("Power cuts during a run") shows these counts."""

from __future__ import annotations

import os

import pytest
from faultlib import TEMP_PREFIXES, sweep
from ops import EngineBoot, ExtlinuxModule, JournalUpdate, UnitsApply
from powercut import PowerCut, PowerLoss

import bootdevice  # isort: skip

tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here


def swept(op) -> None:
    result = sweep(op)
    print("\n" + result.summary())
    assert not any(result.violations.values()), result.report()
    # What a cut leaves besides is a temporary file of the write it cut: a name nothing reads (the checker reads
    # pending/*.json, the backup pruning extlinux.conf.edgeslim-<stamp>.bak, the journal journal.json[.prev]).
    for left in {path for paths in result.leftovers.values() for path in paths}:
        name = os.path.basename(left)
        assert name.startswith(TEMP_PREFIXES) and not name.endswith((".json", ".bak", ".prev")), left


@pytest.mark.parametrize("layers", [("swiotlb",), ("carveouts",), ("swiotlb", "carveouts")], ids="+".join)
def test_engine_boot_apply_survives_a_power_cut_at_every_point(tmp_path, tree, layers):
    swept(EngineBoot(tmp_path, tree, layers))


@pytest.mark.parametrize("fixture", ["r36-stock.conf", "r36-jetson-io-camera.conf"])
@pytest.mark.parametrize("action", ["edit", "restore"])
def test_extlinux_module_survives_a_power_cut_at_every_point(tmp_path, fixture, action):
    swept(ExtlinuxModule(tmp_path, fixture, action))


def test_units_apply_survives_a_power_cut_at_every_point(tmp_path):
    swept(UnitsApply(tmp_path))


@pytest.mark.parametrize("damage", [False, True], ids=["cut", "cut+zeroed"])
def test_journal_update_survives_a_power_cut_at_every_point(tmp_path, damage):
    swept(JournalUpdate(tmp_path, damage))


# ---- the injector itself ------------------------------------------------------------------------------------------
def test_the_cut_stops_everything_after_it_and_unsynced_data_is_lost(tmp_path):
    (tmp_path / "old").write_bytes(b"old")
    with PowerCut([str(tmp_path)], at=4) as cut:
        with open(tmp_path / "synced", "wb") as handle:  # 1 open
            handle.write(b"kept")
            handle.flush()
            os.fsync(handle.fileno())  # 2 fsync
        with open(tmp_path / "unsynced", "wb") as handle:  # 3 open
            handle.write(b"lost")
        with pytest.raises(PowerLoss):
            os.replace(tmp_path / "unsynced", tmp_path / "old")  # 4: the cut
        with pytest.raises(PowerLoss):
            os.unlink(tmp_path / "synced")  # after the cut: nothing happens
        with pytest.raises(PowerLoss), open(tmp_path / "late", "w"):
            pass
    cut.settle()
    assert cut.calls[-1].startswith("replace ") and len(cut.calls) == 4
    assert (tmp_path / "synced").read_bytes() == b"kept"
    assert (tmp_path / "old").read_bytes() == b"old"  # the rename never happened
    assert (tmp_path / "unsynced").read_bytes() == b""  # created, never fsynced: its data did not reach the disk
    assert not (tmp_path / "late").exists()


def test_paths_outside_the_roots_are_not_counted(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    with PowerCut([str(tmp_path / "in")]) as cut:
        for where in ("out", "in"):
            with open(tmp_path / where / "f", "w") as handle:
                handle.write("x")
    assert cut.calls == [f"open {tmp_path / 'in' / 'f'}"]
