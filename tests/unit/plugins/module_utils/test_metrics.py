"""The node_exporter textfile: exposition format, escaping, carry-over, per-layer figures, atomic write."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import metrics as mt

STATE = {
    "version": "0.1.0",
    "playbook": "slim",
    "timestamp": 1764456000,
    "result": "ok",
    "layers": {
        "services": {"reclaimed_bytes": 367001600, "pending_reboot": False},
        "swiotlb": {"reclaimed_bytes": None, "pending_reboot": True},
    },
    "drift": {"services": False, "boot_entry": True, "carveouts": None},
}


def test_render_families_help_type_and_samples():
    text = mt.render(STATE)
    assert text.endswith("\n")
    lines = text.splitlines()
    # Every family: HELP, then TYPE, then its samples; no family without samples.
    for name in ("edgeslim_info", "edgeslim_reclaimed_bytes", "edgeslim_reboot_pending", "edgeslim_drift"):
        i = lines.index(next(x for x in lines if x.startswith(f"# HELP {name} ")))
        assert lines[i + 1] == f"# TYPE {name} gauge"
        assert lines[i + 2].startswith(name)
    assert 'edgeslim_info{version="0.1.0"} 1' in lines
    assert 'edgeslim_last_run_timestamp_seconds{playbook="slim"} 1764456000' in lines
    assert 'edgeslim_last_run_result{playbook="slim",result="ok"} 1' in lines
    assert 'edgeslim_last_run_result{playbook="slim",result="rolled_back"} 0' in lines
    assert 'edgeslim_reclaimed_bytes{layer="services"} 367001600' in lines
    assert not any(x.startswith('edgeslim_reclaimed_bytes{layer="swiotlb"}') for x in lines)  # unknown is not 0
    assert 'edgeslim_reboot_pending{layer="swiotlb"} 1' in lines
    assert 'edgeslim_drift{kind="boot_entry"} 1' in lines and 'edgeslim_drift{kind="services"} 0' in lines
    assert not any('kind="carveouts"' in x for x in lines)
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="(\\.|[^"\\])*",?)*\})? -?[0-9.e+]+$')
    assert all(sample.match(x) for x in lines if not x.startswith("#")), text


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [('a"b', 'a\\"b'), ("a\\b", "a\\\\b"), ("a\nb", "a\\nb"), ("0.1.0+dirty", "0.1.0+dirty"), ('\\"\n', '\\\\\\"\\n')],
)
def test_label_values_escaped_and_read_back(raw, escaped):
    assert mt.escape_label_value(raw) == escaped
    text = mt.render(dict(STATE, version=raw))
    assert f'edgeslim_info{{version="{escaped}"}} 1' in text.splitlines()
    info = [labels for name, labels, _value in mt.parse_samples(text) if name == "edgeslim_info"]
    assert info == [{"version": raw}]


def test_help_escaping():
    assert mt.escape_help('a\\b\n"c"') == 'a\\\\b\\n"c"'


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"playbook": "deploy"}, "playbook must be one of"),
        ({"result": "maybe"}, "result must be one of"),
        ({"version": ""}, "version must be"),
        ({"layers": {"gpu": {}}}, "unknown layer"),
        ({"layers": {"services": {"reclaimed_bytes": "12"}}}, "must be a number"),
        ({"drift": {"kernel": True}}, "unknown drift kind"),
        ({"layers": {"swiotlb": {"pending_reboot": "flip"}}}, "must be a boolean"),
    ],
)
def test_bad_state_refused(change, message):
    with pytest.raises(mt.MetricsError, match=message):
        mt.render(dict(STATE, **change))


def test_previous_values_carried_over_and_replaced():
    previous = mt.previous_state(mt.render(STATE))
    assert previous["layers"]["services"] == {"reclaimed_bytes": 367001600, "pending_reboot": False}
    audit = {"version": "0.1.0", "playbook": "audit", "timestamp": 1, "result": "ok",
             "layers": {layer: {"reclaimed_bytes": None, "pending_reboot": None} for layer in mt.LAYERS},
             "drift": {"services": True, "boot_entry": None, "carveouts": None}}  # fmt: skip
    merged = mt.merge(previous, audit)
    assert merged["layers"]["services"]["reclaimed_bytes"] == 367001600
    assert merged["layers"]["swiotlb"] == {"reclaimed_bytes": None, "pending_reboot": True}
    assert "carveouts" not in merged["layers"]
    assert merged["drift"] == {"services": True, "boot_entry": True}
    rollback = dict(audit, layers={"services": {"reclaimed_bytes": 0, "pending_reboot": False}})
    assert mt.merge(previous, rollback)["layers"]["services"] == {"reclaimed_bytes": 0, "pending_reboot": False}


def test_parse_refuses_garbage():
    with pytest.raises(mt.MetricsError, match="line 2"):
        mt.parse_samples("# HELP x y\nnot a sample at all\n")
    with pytest.raises(mt.MetricsError, match="bad labels"):
        mt.parse_samples('x{a="1",b=2} 1\n')


def test_write_atomic_replaces_whole_file_and_creates_directory(tmp_path):
    path = tmp_path / "textfile_collector" / "edgeslim.prom"
    mt.write_atomic(str(path), "a 1\n")
    assert path.read_text() == "a 1\n" and oct(path.stat().st_mode & 0o777) == "0o644"
    seen = []

    def replace(src: str, dst: str) -> None:
        # The collector must never see the temp file: same directory, not a *.prom name; the target still whole.
        assert os.path.dirname(src) == os.path.dirname(dst) and not src.endswith(".prom")
        assert Path(src).read_text() == "b 2\n" and path.read_text() == "a 1\n"
        seen.append(src)
        os.replace(src, dst)

    mt.write_atomic(str(path), "b 2\n", replace=replace)
    assert seen and path.read_text() == "b 2\n"
    assert sorted(os.listdir(path.parent)) == ["edgeslim.prom"]


def test_write_atomic_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "edgeslim.prom"
    path.write_text("old 1\n")

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(mt.MetricsError, match="No space left"):
        mt.write_atomic(str(path), "new 1\n", replace=broken)
    assert path.read_text() == "old 1\n" and os.listdir(tmp_path) == ["edgeslim.prom"]


MIB = 1024 * 1024


def test_layer_figures_slim():
    results = {
        "services": {"status": "applied", "reclaimed_mb": 350.5},
        "swiotlb": {"status": "pending_reboot", "reclaimed_mb": None},
        "carveouts": {"status": "unchanged"},
    }
    got = mt.layer_figures("slim", results)
    assert got["services"] == {"reclaimed_bytes": int(350.5 * MIB), "pending_reboot": False}
    assert got["swiotlb"] == {"reclaimed_bytes": None, "pending_reboot": True}
    assert got["carveouts"] == {"reclaimed_bytes": None, "pending_reboot": None}
    undone = mt.layer_figures("slim", {"swiotlb": {"status": "reverted"}, "carveouts": {"status": "rolled_back"}})
    assert undone["swiotlb"] == {"reclaimed_bytes": 0, "pending_reboot": False}  # the device rebooted itself
    assert undone["carveouts"] == {"reclaimed_bytes": 0, "pending_reboot": True}


def test_layer_figures_rollback_and_audit():
    results = {"services": {}, "swiotlb": {"status": "rolled_back"}, "carveouts": {"status": "unchanged"}}
    policies = {"edgeslim_reboot_ok": False, "swiotlb_reboot_ok": ""}
    rebooted = mt.rebooted_after_restore(results, policies)
    assert rebooted is False
    got = mt.layer_figures("rollback", results, ["services", "swiotlb"], rebooted)
    assert got["services"] == {"reclaimed_bytes": 0, "pending_reboot": False}
    assert got["swiotlb"] == {"reclaimed_bytes": 0, "pending_reboot": mt.FLIP}
    assert got["carveouts"] == {"reclaimed_bytes": None, "pending_reboot": None}  # not asked for
    assert mt.rebooted_after_restore(results, {"edgeslim_reboot_ok": False, "swiotlb_reboot_ok": "true"}) is True
    assert mt.rebooted_after_restore(results, {"edgeslim_reboot_ok": True, "swiotlb_reboot_ok": False}) is False
    audit = mt.layer_figures("audit", {"services": {"status": "planned", "reclaimed_mb": 12}})
    assert all(v == {"reclaimed_bytes": None, "pending_reboot": None} for v in audit.values())


@pytest.mark.parametrize(("before", "after"), [(True, False), (False, True), (None, True)])
def test_restored_boot_entry_pending_flips(before, after):
    """Staged and never booted (pending 1) then restored: nothing pending. Booted into (0) then restored: pending."""
    previous = {"layers": {"swiotlb": {"reclaimed_bytes": 0, "pending_reboot": before}}} if before is not None else {}
    figures = mt.layer_figures("rollback", {"swiotlb": {"status": "rolled_back"}}, ["swiotlb"], rebooted=False)
    assert figures["swiotlb"]["pending_reboot"] == mt.FLIP
    merged = mt.merge(previous, {"layers": figures, "drift": {}})
    assert merged["layers"]["swiotlb"] == {"reclaimed_bytes": 0, "pending_reboot": after}
    rebooted = mt.layer_figures("rollback", {"swiotlb": {"status": "rolled_back"}}, ["swiotlb"], rebooted=True)
    assert rebooted["swiotlb"]["pending_reboot"] is False
