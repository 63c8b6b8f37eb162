"""The boot-time checker: device-tree check (dt_disabled), and changes booted together commit or revert together."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import stat
from pathlib import Path

import pytest

CHECKER = Path(__file__).resolve().parents[3] / "roles/boot_commit/files/edgeslim-boot-commit.py"


@pytest.fixture
def checker(monkeypatch):
    spec = importlib.util.spec_from_file_location("edgeslim_boot_commit", CHECKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def tree(tmp_path) -> Path:
    for node, status in (("bus@0/display@13800000", b"disabled\0"), ("bus@0/dce@d800000", b"okay\0"),
                         ("bus@0/vi@15c00000", None)):  # fmt: skip
        (tmp_path / node).mkdir(parents=True)
        if status is not None:
            (tmp_path / node / "status").write_bytes(status)
    return tmp_path


def test_dt_disabled(checker, tree, monkeypatch):
    monkeypatch.setattr(checker, "in_container", lambda: False)
    spec = {"checks": {"dt_root": str(tree), "dt_disabled": ["/bus@0/display@13800000"]}}
    assert checker.checks(spec) == ([], [])
    spec["checks"]["dt_disabled"] += ["/bus@0/dce@d800000", "/bus@0/vi@15c00000", "/bus@0/gone@0"]
    failures, notes = checker.checks(spec)
    assert failures == [
        "/bus@0/dce@d800000 is okay in the live device tree (the overlay was not applied)",
        "/bus@0/vi@15c00000 is okay in the live device tree (the overlay was not applied)",
        "/bus@0/gone@0 is missing from the live device tree",
    ]
    assert notes == []


def test_dt_disabled_in_a_container_is_a_note_never_a_pass(checker, tree, monkeypatch):
    monkeypatch.setattr(checker, "in_container", lambda: True)
    failures, notes = checker.checks({"checks": {"dt_root": str(tree), "dt_disabled": ["/bus@0/dce@d800000"]}})
    assert failures == [] and notes == [
        "device-tree check for /bus@0/dce@d800000 not possible in a container (the live tree is not this boot's)"
    ]


def _pending(directory: Path, layer: str, extlinux: Path, command: str) -> None:
    doc = {"layer": layer, "extlinux_path": str(extlinux), "previous_default": "primary", "boots": 0, "max_boots": 3,
           "checks": {"command": command}}  # fmt: skip
    (directory / f"{layer}.json").write_text(json.dumps(doc))


@pytest.fixture
def boot(tmp_path, checker, monkeypatch):
    """Two layers pending on one extlinux.conf whose DEFAULT is the managed entry (one reboot for both)."""
    monkeypatch.setattr(checker, "in_container", lambda: False)
    extlinux = tmp_path / "extlinux.conf"
    extlinux.write_text("TIMEOUT 30\nDEFAULT edgeslim\n\nLABEL primary\n      LINUX /boot/Image\n")
    extlinux.chmod(0o644)
    pending, results = tmp_path / "pending", tmp_path / "results"
    pending.mkdir()
    return extlinux, pending, results


def _boot_both(checker, boot, carveouts_check: str, swiotlb_check: str) -> tuple[bool, dict]:
    """Both layers pending on the shared entry, one boot: (reboot requested, verdict per layer)."""
    extlinux, pending, results = boot
    _pending(pending, "carveouts", extlinux, carveouts_check)
    _pending(pending, "swiotlb", extlinux, swiotlb_check)
    reboot = checker.process(str(pending), str(results))
    return reboot, {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}


def test_layers_booted_together_commit_together(checker, boot):
    extlinux, pending = boot[:2]
    reboot, verdicts = _boot_both(checker, boot, "true", "true")
    assert reboot is False
    assert {k: v["status"] for k, v in verdicts.items()} == {"carveouts": "committed", "swiotlb": "committed"}
    assert "DEFAULT edgeslim" in extlinux.read_text() and not list(pending.iterdir())


def test_one_failing_layer_reverts_every_layer_of_that_boot(checker, boot):
    extlinux, pending = boot[:2]
    reboot, verdicts = _boot_both(checker, boot, "true", "false")
    assert reboot is True
    assert verdicts["swiotlb"]["status"] == "reverted"
    assert verdicts["swiotlb"]["failures"] == ["health command failed (rc 1): false"]
    # carveouts' own checks passed, but the device goes back to the entry that has neither change
    assert verdicts["carveouts"]["status"] == "reverted"
    assert verdicts["carveouts"]["failures"] == [
        "booted together with swiotlb, which failed; the shared entry is reverted"
    ]
    text = extlinux.read_text()
    assert "DEFAULT primary" in text and "DEFAULT edgeslim" not in text and not list(pending.iterdir())
    assert stat.S_IMODE(extlinux.stat().st_mode) == 0o644  # the file keeps its mode (not mkstemp's 0600)


def test_a_layer_on_another_boot_file_is_not_dragged_along(checker, boot, tmp_path):
    extlinux, pending, results = boot
    other = tmp_path / "other.conf"
    other.write_text(extlinux.read_text())
    _pending(pending, "carveouts", other, "true")
    _pending(pending, "swiotlb", extlinux, "false")
    assert checker.process(str(pending), str(results)) is True
    assert json.loads((results / "carveouts.json").read_text())["status"] == "committed"
    assert "DEFAULT edgeslim" in other.read_text()


def test_a_revert_is_signed_with_the_hook_of_the_pending_record(checker, boot, tmp_path):
    """UEFI Secure Boot: the rewritten extlinux.conf gets a fresh .sig from the hook recorded at arm time."""
    extlinux, pending, results = boot
    signer = tmp_path / "sign.sh"
    signer.write_text('#!/bin/sh\nsha256sum "$1" | cut -d" " -f1 > "$1.sig"\n')
    signer.chmod(0o755)
    _pending(pending, "swiotlb", extlinux, "false")
    doc = json.loads((pending / "swiotlb.json").read_text())
    (pending / "swiotlb.json").write_text(json.dumps({**doc, "sign_command": [str(signer), "{file}"]}))
    assert checker.process(str(pending), str(results)) is True
    sig = (tmp_path / "extlinux.conf.sig").read_text().strip()
    assert "DEFAULT primary" in extlinux.read_text() and sig == hashlib.sha256(extlinux.read_bytes()).hexdigest()
    assert json.loads((results / "swiotlb.json").read_text())["notes"] == []


def test_a_revert_whose_signing_fails_says_so(checker, boot, tmp_path):
    extlinux, pending, results = boot
    _pending(pending, "swiotlb", extlinux, "false")
    doc = json.loads((pending / "swiotlb.json").read_text())
    (pending / "swiotlb.json").write_text(json.dumps({**doc, "sign_command": ["true", "{file}"]}))
    assert checker.process(str(pending), str(results)) is True
    verdict = json.loads((results / "swiotlb.json").read_text())
    assert verdict["status"] == "reverted" and verdict["notes"] == [f"signing hook left no {extlinux}.sig"]


# The checker fails safe: a hang, a crash, a damaged record or a read-only /var never leaves the device on the
# managed entry with nothing reverting it.

THREE_ENTRIES = "TIMEOUT 30\nDEFAULT edgeslim\n\nLABEL edgeslim\n  LINUX /boot/Image\n\nLABEL primary\n" \
    "  LINUX /boot/Image\n\nLABEL backup\n  LINUX /boot/Image\n"  # fmt: skip


def _record(pending: Path, layer: str, **changes) -> None:
    doc = json.loads((pending / f"{layer}.json").read_text())
    doc.update(changes)
    (pending / f"{layer}.json").write_text(json.dumps(doc))


def _verdict(results: Path, layer: str) -> dict:
    return json.loads((results / f"{layer}.json").read_text())


def test_a_hanging_check_times_out_and_counts_as_failed(checker, boot):
    extlinux, pending, results = boot
    _pending(pending, "swiotlb", extlinux, "sleep 30")
    _record(pending, "swiotlb", checks={"command": "sleep 30", "timeout": 1})
    import time

    start = time.monotonic()
    assert checker.process(str(pending), str(results)) is True
    assert time.monotonic() - start < 10
    verdict = _verdict(results, "swiotlb")
    assert verdict["status"] == "reverted"
    assert verdict["failures"] == ["health command timed out after 1 s: sleep 30"]
    assert "DEFAULT primary" in extlinux.read_text()


def test_the_check_timeout_has_a_default_and_the_unit_outlasts_it(checker, boot, monkeypatch):
    extlinux, pending, results = boot
    assert checker.CHECK_TIMEOUT == 120
    monkeypatch.setattr(checker, "CHECK_TIMEOUT", 1)  # the default applies when the record sets none
    _pending(pending, "swiotlb", extlinux, "sleep 30")
    assert checker.process(str(pending), str(results)) is True
    assert _verdict(results, "swiotlb")["failures"] == ["health command timed out after 1 s: sleep 30"]
    unit = (CHECKER.parent / "edgeslim-boot-commit.service").read_text()
    assert "\nTimeoutStartSec=15min\n" in unit


def test_max_boots_is_tested_before_the_checks(checker, boot, tmp_path):
    """A check that hangs at every boot must not keep the change from being reverted after max_boots."""
    extlinux, pending, results = boot
    marker = tmp_path / "checked"
    _pending(pending, "swiotlb", extlinux, f"touch {marker}")
    _record(pending, "swiotlb", boots=3)
    assert checker.process(str(pending), str(results)) is True
    assert not marker.exists()
    verdict = _verdict(results, "swiotlb")
    assert verdict["status"] == "reverted" and verdict["failures"] == ["booted 4 times without committing"]
    assert "DEFAULT primary" in extlinux.read_text()


def test_an_unexpected_error_reverts_that_change_and_the_others_are_still_processed(checker, boot, monkeypatch):
    extlinux, pending, results = boot
    other = extlinux.parent / "other.conf"
    other.write_text(extlinux.read_text())
    _pending(pending, "carveouts", other, "true")
    _pending(pending, "swiotlb", extlinux, "true")
    real = checker.checks

    def checks(record, cache=None):
        if record["layer"] == "swiotlb":
            raise KeyError("surprise")
        return real(record, cache)

    monkeypatch.setattr(checker, "checks", checks)
    assert checker.process(str(pending), str(results)) is True
    assert _verdict(results, "swiotlb")["status"] == "reverted"
    assert _verdict(results, "swiotlb")["failures"] == ["checker error: KeyError: 'surprise'"]
    assert _verdict(results, "carveouts")["status"] == "committed"
    assert "DEFAULT primary" in extlinux.read_text() and "DEFAULT edgeslim" in other.read_text()


def test_main_never_raises_without_attempting_a_revert(checker, boot, monkeypatch):
    extlinux, pending = boot[:2]
    _pending(pending, "swiotlb", extlinux, "true")
    monkeypatch.setattr(checker, "PENDING", str(pending))
    monkeypatch.setattr(checker, "process", lambda: 1 / 0)
    calls = []
    monkeypatch.setattr(checker.subprocess, "run", lambda argv, **kw: calls.append(argv))
    assert checker.main() == 1
    assert "DEFAULT primary" in extlinux.read_text() and calls == [["systemctl", "reboot"]]
    assert not list(pending.iterdir())  # or the same error would revert and reboot at every boot


@pytest.mark.parametrize(("recorded", "expected"), [
    ({"previous_default": "backup"}, "backup"),
    ({"previous_default": "gone", "stock_default": "backup"}, "backup"),
    ({"previous_default": "gone"}, "primary"),
])  # fmt: skip
def test_a_revert_only_targets_an_existing_label(checker, boot, recorded, expected):
    extlinux, pending, results = boot
    extlinux.write_text(THREE_ENTRIES)
    _pending(pending, "swiotlb", extlinux, "false")
    _record(pending, "swiotlb", **recorded)
    assert checker.process(str(pending), str(results)) is True
    assert f"\nDEFAULT {expected}\n" in extlinux.read_text()
    assert _verdict(results, "swiotlb")["reverted_to"] == expected


@pytest.mark.parametrize(("content", "reason"), [
    ("", "unreadable"),
    ('{"layer": "swiotlb", "extlinux_', "unreadable"),
    ("not json", "unreadable"),
    (b"\xff\xfe{}", "unreadable"),
    ("[]", "is not a JSON object"),
    ('{"layer": "swiotlb", "boots": 0}', "lacks extlinux_path, previous_default"),
    ('{"layer": "swiotlb", "extlinux_path": "/boot/extlinux/extlinux.conf", "previous_default": "primary", '
     '"max_boots": "three"}', "invalid"),
    ('{"layer": "swiotlb", "extlinux_path": "/boot/extlinux/extlinux.conf", "previous_default": "primary", '
     '"checks": {"timeout": 0}}', "invalid: checks.timeout must be a positive number"),
    ('{"layer": "../../etc/cron.d/x", "extlinux_path": "/boot/extlinux/extlinux.conf", "previous_default": "primary"}',
     "names layer '../../etc/cron.d/x', not its file's 'swiotlb'"),  # the verdict's file name comes from the layer
    ('{"layer": "swiotlb", "extlinux_path": "/boot/extlinux/extlinux.conf", "previous_default": "primary", '
     '"checks": null}', "invalid: checks is NoneType, not an object"),
])  # fmt: skip
def test_a_damaged_pending_record_reverts_to_the_first_non_managed_entry(checker, boot, monkeypatch, content, reason):
    extlinux, pending, results = boot
    extlinux.write_text(THREE_ENTRIES)
    monkeypatch.setattr(checker, "EXTLINUX", str(extlinux))
    record = pending / "swiotlb.json"
    if isinstance(content, bytes):
        record.write_bytes(content)
    else:
        record.write_text(content.replace("/boot/extlinux/extlinux.conf", str(extlinux)))
    assert checker.process(str(pending), str(results)) is True
    verdict = _verdict(results, "swiotlb")
    assert verdict["status"] == "reverted" and verdict["reverted_to"] == "primary"
    assert reason in verdict["failures"][0] and "reverting to an existing non-managed entry" in verdict["failures"][0]
    assert "\nDEFAULT primary\n" in extlinux.read_text() and not list(pending.iterdir())


def test_a_read_only_var_still_reverts(checker, boot, monkeypatch, capsys):
    extlinux, pending, results = boot
    _pending(pending, "swiotlb", extlinux, "false")

    def read_only(path, doc):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(checker, "write_json", read_only)
    assert checker.process(str(pending), str(results)) is True
    assert "DEFAULT primary" in extlinux.read_text()
    assert f"cannot write {results / 'swiotlb.json'}: [Errno 30] Read-only file system" in capsys.readouterr().err


def test_a_full_var_leaves_no_half_written_pending_record(checker, boot, monkeypatch):
    extlinux, pending = boot[:2]
    _pending(pending, "swiotlb", extlinux, "true")
    before = (pending / "swiotlb.json").read_text()

    def full(doc, handle, **kw):
        handle.write('{"layer": "sw')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checker.json, "dump", full)
    assert checker.try_write_json(str(pending / "swiotlb.json"), {"layer": "swiotlb", "boots": 1}) is False
    assert [p.name for p in pending.iterdir()] == ["swiotlb.json"] and (pending / "swiotlb.json").read_text() == before


@pytest.mark.parametrize("code", [28, 27, 30])  # ENOSPC, EFBIG, EROFS
def test_a_full_boot_on_revert_leaves_the_file_whole_says_so_and_retries_at_the_next_boot(
    checker, boot, monkeypatch, capsys, code
):
    """/boot full while the revert is written: no temporary file, extlinux.conf byte-identical (never half
    written), a log line saying what to do, no reboot (it would boot the same entry), and the record kept with the
    revert owed, so the next boot reverts without running the checks again."""
    extlinux, pending, results = boot
    _pending(pending, "swiotlb", extlinux, "false")
    before = extlinux.read_bytes()
    real_fdopen = checker.os.fdopen

    def full(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if not checker.os.readlink(f"/proc/self/fd/{fd}").startswith(str(extlinux.parent / ".extlinux.")):
            return handle  # /var (the boot count, the verdict) has room

        def write(text):
            raise OSError(code, checker.os.strerror(code))

        handle.write = write
        return handle

    monkeypatch.setattr(checker.os, "fdopen", full)
    assert checker.process(str(pending), str(results)) is False
    assert extlinux.read_bytes() == before
    assert sorted(p.name for p in extlinux.parent.iterdir()) == ["extlinux.conf", "pending", "results"]
    verdict = _verdict(results, "swiotlb")
    assert verdict["status"] == "revert_failed"
    err = capsys.readouterr().err
    assert f"cannot revert {extlinux} to 'primary'" in err
    assert "extlinux.conf is unchanged (DEFAULT edgeslim)" in err and "no temporary file is left" in err
    assert "the revert is retried at the next boot" in err
    record = json.loads((pending / "swiotlb.json").read_text())
    assert record["revert_required"].startswith("health command failed (rc 1): false")

    monkeypatch.setattr(checker.os, "fdopen", real_fdopen)
    marker = extlinux.parent / "checked"
    _record(pending, "swiotlb", checks={"command": f"touch {marker}"})
    assert checker.process(str(pending), str(results)) is True
    assert not marker.exists() and "\nDEFAULT primary\n" in extlinux.read_text()
    verdict = _verdict(results, "swiotlb")
    assert verdict["status"] == "reverted" and verdict["failures"][0].startswith("a revert failed at an earlier boot")
    assert not list(pending.iterdir())


def test_set_default_removes_its_temporary_file_when_the_write_fails(checker, tmp_path, monkeypatch):
    conf = tmp_path / "extlinux.conf"
    conf.write_text(THREE_ENTRIES)

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checker.os, "fsync", full)
    with pytest.raises(OSError):
        checker.set_default(str(conf), "primary")
    assert [p.name for p in tmp_path.iterdir()] == ["extlinux.conf"] and conf.read_text() == THREE_ENTRIES
