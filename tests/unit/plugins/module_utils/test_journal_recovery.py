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
    assert j.load_journal(str(path)) == {"version": 1, "layers": {"swiotlb": {}}}
    assert (tmp_path / "journal.json.corrupt").read_text() == ""
    assert len(warnings) == 1 and "journal.json.corrupt" in warnings[0]
