"""Remove a protection and the fault sweep fails: each test below patches the device code to drop or reorder one step
the invariants rely on and asserts that the sweep of test_fault_sweep.py then finds a violation, and which one.
These prove the sweep can fail; the same sweeps pass on the code as it is."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from faultlib import sweep
from ops import EngineBoot, ExtlinuxModule, JournalUpdate

from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_apply as ba  # isort: skip
from ansible_collections.edgeslim.jetson.plugins.module_utils import dt_overlay as ov  # isort: skip
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux_edit as xe  # isort: skip
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j  # isort: skip
from ansible_collections.edgeslim.jetson.plugins.modules import extlinux  # isort: skip
import bootdevice  # isort: skip

tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here


def violations(op: Any) -> list[str]:
    result = sweep(op, stop_at_first=True)
    print("\n" + result.report())
    return [v for found in result.violations.values() for v in found]


def write_then(after: list[Any], real: Any) -> Any:
    """xe.write_conf that runs the deferred steps only after extlinux.conf is written."""

    def write_conf(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        for step in after:
            step()
        after.clear()
        return out

    return write_conf


def test_arming_after_the_extlinux_write_is_found(tmp_path, tree, monkeypatch):
    """Protection: commit-or-revert is armed BEFORE extlinux.conf names the managed entry."""
    deferred: list[Any] = []
    real_arm = ba.arm

    def arm_later(*args: Any, **kwargs: Any) -> str:
        deferred.append(lambda: real_arm(*args, **kwargs))
        return ""

    monkeypatch.setattr(ba, "arm", arm_later)
    monkeypatch.setattr(xe, "write_conf", write_then(deferred, xe.write_conf))
    found = violations(EngineBoot(tmp_path, tree, ("swiotlb",)))
    assert any("DEFAULT is the managed entry but swiotlb is not armed" in v for v in found), found


def test_journaling_after_the_boot_files_is_found(tmp_path, tree, monkeypatch):
    """Protection: the journal records the change BEFORE the first boot file or pending record is written."""
    deferred: list[Any] = []
    real_update, real_write = j.update_layer, xe.write_conf
    applying = []

    def update_later(*args: Any, **kwargs: Any) -> Any:
        if not applying:
            return real_update(*args, **kwargs)
        deferred.append(lambda: real_update(*args, **kwargs))
        return None, None

    def write_conf(*args: Any, **kwargs: Any) -> Any:
        for step in deferred:  # the journal just before extlinux.conf, after the boot files and the arming
            step()
        deferred.clear()
        return real_write(*args, **kwargs)

    real_apply = ba.apply_boot

    def apply_boot(*args: Any, **kwargs: Any) -> Any:
        applying.append(True)
        try:
            return real_apply(*args, **kwargs)
        finally:
            applying.clear()

    monkeypatch.setattr(j, "update_layer", update_later)
    monkeypatch.setattr(xe, "write_conf", write_conf)
    monkeypatch.setattr(ba, "apply_boot", apply_boot)
    found = violations(EngineBoot(tmp_path, tree, ("carveouts",)))
    assert any("but the journal has no carveouts record" in v for v in found), found


def test_an_unsynced_pending_record_is_found(tmp_path, tree, monkeypatch):
    """Protection: the pending record is fsynced before extlinux.conf is written."""

    def install_unsynced(path: str, data: bytes, replace: Any, mode: int = 0o644) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".edgeslim.", dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)  # no fsync
        os.chmod(tmp, mode)
        replace(tmp, path)
        ov.fsync_dir(os.path.dirname(path))

    def write_json(path: str, doc: dict, replace: Any, mode: int = 0o600) -> None:
        install_unsynced(path, (ba.json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), replace, mode)

    monkeypatch.setattr(ba, "write_json", write_json)
    found = violations(EngineBoot(tmp_path, tree, ("swiotlb",)))
    assert any("swiotlb pending record is invalid" in v and "unreadable" in v for v in found), found


def test_a_journal_without_its_copy_is_found(tmp_path, monkeypatch):
    """Protection: the journal's copy <journal>.prev (written first) and the readers' fallback to it."""
    monkeypatch.setattr(j, "write_journal", lambda path, doc, replace=None, mode=0o600:
                        j.write_atomic(path, j.dump_journal(doc), replace, mode))  # fmt: skip
    found = violations(JournalUpdate(tmp_path, damage=True))
    assert any("neither the journal nor its copy is usable" in v for v in found), found


def test_readers_without_the_fallback_are_found(tmp_path, monkeypatch):
    op = JournalUpdate(tmp_path, damage=True)
    monkeypatch.setattr(j, "load_journal_fallback", lambda path: (j.load_journal(path), None))
    found = violations(op)
    assert any("neither the journal nor its copy is usable" in v for v in found), found


def test_an_extlinux_conf_rewritten_in_place_is_found(tmp_path, tree, monkeypatch):
    """Protection: extlinux.conf is replaced by a rename of a fsynced temporary file, never rewritten in place."""

    def in_place(p: dict, before: str, after: str, journal: Any, replace: Any, warn: Any) -> None:
        journal()
        with open(p["path"], "w", encoding="utf-8") as handle:
            handle.write(after)
            handle.flush()
            os.fsync(handle.fileno())

    monkeypatch.setattr(xe, "write_conf", in_place)
    found = violations(EngineBoot(tmp_path, tree, ("swiotlb",)))
    assert any("extlinux.conf unreadable" in v or "names no entry" in v for v in found), found


def test_clearing_the_record_before_the_removal_is_found(tmp_path, monkeypatch):
    """Protection: state=absent clears the journal record only after extlinux.conf is written (the old order made
    a cut in between lose the record: the re-run then booted the first entry instead of JetsonIO)."""
    op = ExtlinuxModule(tmp_path, "r36-jetson-io-camera.conf", "restore")
    real = extlinux.write_conf

    def clear_first(p: dict, *args: Any, **kwargs: Any) -> Any:
        if p["state"] == "absent":
            j.update_layer(p["journal_path"], p["journal_layer"], lambda _old: None)
        return real(p, *args, **kwargs)

    monkeypatch.setattr(extlinux, "write_conf", clear_first)
    found = violations(op)
    assert any("no record to remove it with" in v for v in found), found
    assert any("not byte-identical to the original" in v for v in found), found
