"""journal: atomic JSON document with one key per layer (contract 2)."""

from __future__ import annotations

import json
import os

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j


def test_missing_file_is_empty(tmp_path):
    assert j.load_journal(str(tmp_path / "nope.json")) == {"version": 1, "layers": {}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "top level must be a JSON object"),
        ('{"version": 2, "layers": {}}', "unsupported journal version 2"),
        ('{"version": 1, "layers": []}', "'layers' must be a JSON object"),
        ('{"version": 1, "layers": {"services": 3}}', "layer 'services' must be a JSON object"),
    ],
)
def test_bad_documents(tmp_path, text, message):
    path = tmp_path / "journal.json"
    path.write_text(text)
    with pytest.raises(j.JournalError, match=message):
        j.load_journal(str(path))


def test_update_layer_touches_only_its_layer(tmp_path):
    path = str(tmp_path / "sub" / "journal.json")
    j.update_layer(path, "swiotlb", lambda old: {"append": "x"})
    old, new = j.update_layer(path, "services", lambda old: {"units": {"a.service": {}}})
    assert old is None and new == {"units": {"a.service": {}}}
    with open(path) as handle:
        doc = json.load(handle)
    assert doc == {
        "version": 1,
        "generation": 2,
        "layers": {"swiotlb": {"append": "x"}, "services": {"units": {"a.service": {}}}},
    }
    j.update_layer(path, "services", lambda old: None)
    assert j.load_journal(path)["layers"] == {"swiotlb": {"append": "x"}}
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_unchanged_layer_is_not_rewritten(tmp_path):
    path = str(tmp_path / "journal.json")
    j.update_layer(path, "services", lambda old: {"a": 1})
    mtime = os.stat(path).st_mtime_ns
    calls = []
    j.update_layer(path, "services", lambda old: old, replace=lambda s, d: calls.append((s, d)))
    assert calls == [] and os.stat(path).st_mtime_ns == mtime


def test_write_uses_temp_file_in_same_dir_and_given_replace(tmp_path):
    path = str(tmp_path / "journal.json")
    seen = []

    def replace(src, dst):  # like module.atomic_move on a new file: permissions from the umask
        with open(src) as handle:
            seen.append((os.path.dirname(src), dst, json.load(handle)))
        os.chmod(src, 0o644)
        os.replace(src, dst)

    j.write_journal(path, {"version": 1, "layers": {"services": {}}}, replace=replace)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert seen == [(str(tmp_path), path, {"version": 1, "layers": {"services": {}}})]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".journal.")] == []


def test_failed_replace_leaves_old_journal_and_no_temp(tmp_path):
    path = tmp_path / "journal.json"
    j.write_journal(str(path), {"version": 1, "layers": {"services": {"old": True}}})

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    with pytest.raises(j.JournalError, match="No space left"):
        j.write_journal(str(path), {"version": 1, "layers": {}}, replace=boom)
    assert json.loads(path.read_text())["layers"]["services"] == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.json", "journal.json.prev"]


def test_layer_must_be_dict(tmp_path):
    with pytest.raises(j.JournalError, match="must be a dict"):
        j.update_layer(str(tmp_path / "j.json"), "services", lambda old: ["x"])


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_empty_file_is_refused_not_reset(tmp_path, text):
    path = tmp_path / "journal.json"
    path.write_text(text)
    with pytest.raises(j.JournalError, match="the journal is empty") as err:
        j.load_journal(str(path))
    assert str(path) in str(err.value) and "journal.json.prev" in str(err.value) and "docs/journal.md" in str(err.value)
    with pytest.raises(j.JournalError, match="the journal is empty"):
        j.update_layer(str(path), "services", lambda old: {"units": {}})
    assert path.read_text() == text
