"""journal: a damaged journal is refused by writers and recovered from its copy by readers that restore."""

from __future__ import annotations

import json
import os

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j

GEN1 = {"version": 1, "layers": {"services": {"units": {"gdm.service": {"active_state": "active"}}}}}
GEN2 = {"version": 1, "layers": {"services": {"units": {"gdm.service": {"active_state": "active"}}}, "swiotlb": {}}}


def test_copy_is_written_and_synced_before_the_journal_is_replaced(tmp_path):
    path = str(tmp_path / "journal.json")
    j.write_journal(path, GEN1)
    seen = []

    def replace(src, dst):  # the copy must already hold the new generation when the journal is replaced
        with open(dst + j.PREV_SUFFIX) as handle:
            seen.append(json.load(handle))
        os.replace(src, dst)

    j.write_journal(path, GEN2, replace=replace)
    assert seen == [GEN2]
    assert json.loads((tmp_path / "journal.json.prev").read_text()) == GEN2
    assert oct(os.stat(path + j.PREV_SUFFIX).st_mode & 0o777) == "0o600"


def test_truncated_journal_refused_by_writers_named_with_recovery(tmp_path):
    path = tmp_path / "journal.json"
    j.write_journal(str(path), GEN1)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(j.JournalError, match="not valid JSON") as err:
        j.update_layer(str(path), "swiotlb", lambda old: {"x": 1})
    msg = str(err.value)
    assert msg.startswith(str(path)) and "never reset" in msg and f"cp -p {path}.prev {path}" in msg
    assert path.read_text() == text[: len(text) // 2]


def test_readers_fall_back_to_the_copy_with_a_warning(tmp_path):
    path = tmp_path / "journal.json"
    j.write_journal(str(path), GEN1)
    path.write_text(path.read_text()[:20])
    doc, warning = j.load_journal_fallback(str(path))
    assert doc == GEN1
    assert "not valid JSON" in warning and "journal.json.prev" in warning
    healthy, none = j.load_journal_fallback(str(tmp_path / "other.json"))
    assert healthy == j.empty_journal() and none is None


@pytest.mark.parametrize(("prev_text", "message"), [(None, "no copy"), ("{", "its copy is unreadable too")])
def test_fallback_fails_when_no_readable_copy(tmp_path, prev_text, message):
    path = tmp_path / "journal.json"
    path.write_text("")
    if prev_text is not None:
        (tmp_path / "journal.json.prev").write_text(prev_text)
    with pytest.raises(j.JournalError, match=message) as err:
        j.load_journal_fallback(str(path))
    assert "the journal is empty" in str(err.value)


def test_restore_clearing_rebuilds_from_the_copy_and_keeps_the_damaged_file(tmp_path):
    path = tmp_path / "journal.json"
    j.write_journal(str(path), GEN2)
    path.write_text("")
    warnings = []
    old, new = j.update_layer(str(path), "services", lambda old: None, fallback=True, warnings=warnings)
    assert old == GEN2["layers"]["services"] and new is None
    assert j.load_journal(str(path)) == {"version": 1, "generation": 1, "layers": {"swiotlb": {}}}
    assert (tmp_path / "journal.json.corrupt").read_text() == ""
    assert len(warnings) == 1 and "journal.json.corrupt" in warnings[0]


def _two_runs(tmp_path):
    """A journal written twice through update_layer (generation 2), services layer created by run R1."""
    path = tmp_path / "journal.json"
    j.update_layer(str(path), "services", lambda old: {"created": "R1", "units": {"gdm.service": {}}})
    j.update_layer(str(path), "swiotlb", lambda old: {"created": "S1"})
    return path


def test_every_layer_write_increments_the_generation(tmp_path):
    path = _two_runs(tmp_path)
    assert j.load_journal(str(path))["generation"] == 2
    assert json.loads((tmp_path / "journal.json.prev").read_text())["generation"] == 2
    j.update_layer(str(path), "swiotlb", lambda old: old)  # unchanged: nothing written
    assert j.load_journal(str(path))["generation"] == 2


def test_torn_journal_falls_back_to_the_same_run_naming_the_generation(tmp_path):
    path = _two_runs(tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) - 30])  # a torn write: the head (generation, created stamps) is legible
    doc, warning = j.load_journal_fallback(str(path))
    assert doc["layers"]["services"]["created"] == "R1"
    assert f"using its copy {path}.prev: generation 2 (services created R1, swiotlb created S1)" in warning


@pytest.mark.parametrize(
    ("copy", "why"),
    [
        ({"version": 1, "generation": 1, "layers": {"services": {"created": "R1"}}}, "generation 1, the damaged"),
        ({"version": 1, "generation": 2, "layers": {"services": {"created": "R0"}}}, "created R0, the damaged"),
    ],
)
def test_copy_of_another_generation_or_run_is_refused_naming_both_files(tmp_path, copy, why):
    path = _two_runs(tmp_path)
    path.write_text(path.read_text()[:90])
    (tmp_path / "journal.json.prev").write_text(json.dumps(copy, sort_keys=True))
    with pytest.raises(j.JournalError) as err:
        j.load_journal_fallback(str(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}: not valid JSON") and f"its copy {path}.prev is readable but not the same run" in msg
    assert why in msg and "docs/journal.md, Recovery" in msg and f"cp -p {path}.prev {path}" in msg


def test_both_files_bad_names_both_and_the_recovery(tmp_path):
    path = _two_runs(tmp_path)
    path.write_text("")
    (tmp_path / "journal.json.prev").write_text('{"version": 1, "gen')
    with pytest.raises(j.JournalError) as err:
        j.load_journal_fallback(str(path))
    msg = str(err.value)
    assert f"{path}: the journal is empty" in msg and f"its copy is unreadable too: {path}.prev: not valid JSON" in msg
    assert "docs/journal.md, Recovery" in msg


def test_generation_must_be_a_count():
    with pytest.raises(j.JournalError, match="'generation' must be a non-negative integer"):
        j.parse_journal('{"version": 1, "generation": "2", "layers": {}}')
