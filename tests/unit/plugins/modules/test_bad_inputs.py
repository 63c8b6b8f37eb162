"""Every row of bad_inputs.ROWS is refused with its message before any change; docs/reliability.md shows the table.

Before any change: for a boot file, every file under the root is byte-identical and no file was added (no temporary
file, backup or journal); for units, only read-only systemctl calls ran, every unit and the default target are as
they were, and the journal is as it was (absent, or byte-identical when it was damaged on purpose).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import hostguards, layer_inputs
from ansible_collections.edgeslim.jetson.plugins.modules import dt_overlay, extlinux
from bad_inputs import ORIN_NANO, PAGE, PREFLIGHT, ROWS, page_with_table
from fake_systemd import FakeUnit
from modhelper import run_module
from test_engine import device
from test_engine import run as engine_run
from test_extlinux_safety import MANAGED, make_rootfs
from test_units_safety import core_host
from test_units_safety import run as units_run


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file (content) and symlink (target) below root."""
    out: dict[str, bytes | str] = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(base, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out[rel] = os.readlink(full)
            elif os.path.isfile(full):
                with open(full, "rb") as handle:
                    out[rel] = handle.read()
    return out


def assert_message(message: str, fragments: list[str]) -> None:
    at = 0
    for fragment in fragments:
        found = message.find(fragment, at)
        assert found >= 0, f"{fragment!r} not found (in order) in {message!r}"
        at = found + len(fragment)


def refused_module(main, args: dict[str, Any], root: Path) -> str:
    before = tree(root)
    res = run_module(main, args, diff=True)
    assert res.get("failed") is True, res
    assert tree(root) == before
    return res["msg"].replace(str(root), "")


def feed_extlinux(item: dict, tmp_path: Path, monkeypatch) -> str:
    root = make_rootfs(tmp_path)
    conf = root / "boot/extlinux/extlinux.conf"
    setup = item["setup"]
    if "conf" in setup:
        conf.write_bytes(setup["conf"])
    if "symlink" in setup:
        os.symlink(setup["symlink"][1], root / setup["symlink"][0])
    if "fail_write" in setup:  # the n-th os.write fails: 1 = the backup, 2 = the new extlinux.conf
        name, nth = setup["fail_write"]
        calls, real = [], os.write

        def write(fd, data):
            calls.append(fd)
            if len(calls) == nth:
                raise OSError(getattr(errno, name), os.strerror(getattr(errno, name)))
            return real(fd, data)

        monkeypatch.setattr(os, "write", write)
    args = {"path": str(conf), "root": str(root), "backup": False, "journal_path": str(root / "journal.json"),
            **MANAGED, **item["args"]}  # fmt: skip
    return refused_module(extlinux.main, args, root)


def feed_dt_overlay(item: dict, tmp_path: Path) -> str:
    root = tmp_path / "rootfs"
    (root / "boot").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/victim.dtbo").write_bytes(b"keep")
    os.symlink("../etc", root / "boot/link")
    args = {"path": str(root / "no-live-tree"), "recipes": ["headless"], "boot_root": str(root / "boot"),
            "dtc": ["/nonexistent/dtc"], **item["args"]}  # fmt: skip
    args["dest"] = str(root) + args["dest"]
    return refused_module(dt_overlay.main, args, root)


def feed_units(item: dict, tmp_path: Path, engine: bool, monkeypatch) -> str:
    extra = [FakeUnit(**{k: tuple(v) if isinstance(v, list) else v for k, v in u.items()})
             for u in item["setup"].get("units", [])]  # fmt: skip
    journal = tmp_path / "journal.json"
    if engine:
        (tmp_path / "proc").mkdir()
        monkeypatch.setattr(hostguards, "PROC_ROOT", str(tmp_path / "proc"))  # no SSH ancestor
        dev = device(tmp_path, [*core_host().units.values(), *extra])
        fake = dev.fake
    else:
        fake = core_host()
        for unit in extra:
            fake.units[unit.id] = unit
            fake.alias.update({a: unit.id for a in unit.aliases})
    damage = item["setup"].get("journal")
    if damage:
        units_run(fake, {"disable": ["nvargus-daemon"]}, tmp_path)  # a real journal first
        text = journal.read_text()
        journal.write_text("" if damage == "empty" else text[: len(text) // 2])
        fake.calls.clear()
    journal_before = journal.read_bytes() if journal.exists() else None
    before = fake.snapshot()
    res = engine_run(dev, "apply", item["args"], tmp_path) if engine else units_run(fake, item["args"], tmp_path)
    assert res.get("failed") is True, res
    assert fake.snapshot() == before
    assert all(c[1] in ("--no-pager", "get-default") for c in fake.calls if c[0] == "/bin/systemctl"), fake.calls
    assert (journal.read_bytes() if journal.exists() else None) == journal_before
    return res["msg"].replace(f"{tmp_path}/", "")


def feed(item: dict, tmp_path: Path, monkeypatch) -> str:
    kind, args = item["kind"], item["args"]
    if kind == "extlinux":
        return feed_extlinux(item, tmp_path, monkeypatch)
    if kind == "dt_overlay":
        return feed_dt_overlay(item, tmp_path)
    if kind in ("units", "engine"):
        return feed_units(item, tmp_path, kind == "engine", monkeypatch)
    if kind == "reboot_policy":
        errors = layer_inputs.reboot_policy_errors(args)
    elif kind == "preflight":
        settings = {k: v for k, v in {**PREFLIGHT, **args}.items() if k not in ("layers", "l4t", "swiotlb_use")}
        info = {**ORIN_NANO, "l4t": args.get("l4t", ORIN_NANO["l4t"])}
        errors = layer_inputs.layer_refusals(args["layers"], settings, info=info, swiotlb_use=args.get("swiotlb_use"))[
            "refused"
        ]
    else:
        raise AssertionError(f"unknown kind {kind}")
    assert errors and all(errors), errors  # pure checks: refused before the play reaches any change
    return "; ".join(errors)


def test_the_table_has_at_least_30_rows_each_complete():
    assert len(ROWS) >= 30
    for item in ROWS:
        assert item["input"] and item["where"] and item["message"] and all(item["message"]), item


@pytest.mark.parametrize("item", ROWS, ids=[f"{n}-{r['kind']}" for n, r in enumerate(ROWS, 1)])
def test_each_bad_input_is_refused_with_its_message_before_any_change(item, tmp_path, monkeypatch):
    assert_message(feed(item, tmp_path, monkeypatch), item["message"])


def test_the_page_shows_the_current_table():
    text = PAGE.read_text()
    assert text == page_with_table(text), (
        f"{PAGE} is out of date: run .venv/bin/python tests/unit/plugins/modules/bad_inputs.py"
    )


def test_a_fragment_out_of_order_or_missing_fails():
    with pytest.raises(AssertionError):
        assert_message("b then a", ["a", "b"])
    with pytest.raises(AssertionError):
        assert_message("a", ["c"])
    assert_message("a then b", ["a", "b"])


def test_the_feed_fails_on_an_accepted_input(tmp_path, monkeypatch):
    """The harness cannot pass a row that is not refused (a good input through each kind)."""
    good = [
        {"kind": "extlinux", "args": {"kernel_args": {"swiotlb": 2048}}, "setup": {}, "message": []},
        {"kind": "units", "args": {"disable": ["bluetooth"]}, "setup": {}, "message": []},
        {"kind": "reboot_policy", "args": {"edgeslim_reboot_ok": "yes"}, "setup": {}, "message": []},
        {"kind": "preflight", "args": {"layers": ["swiotlb", "carveouts"]}, "setup": {}, "message": []},
    ]
    for n, item in enumerate(good):
        with pytest.raises(AssertionError):
            feed(item, tmp_path / str(n), monkeypatch)
