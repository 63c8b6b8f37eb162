"""The operations the fault sweep cuts, each with the invariants that must hold after a power cut at any point:
the engine's boot apply (SWIOTLB, carveouts overlays, both), edgeslim.jetson.extlinux's edit and its restore, the
units module's apply (journal first) and a journal update."""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from typing import Any, ClassVar

from faultlib import Op, file_changes, fs_restore, fs_snapshot
from powercut import PowerCut

from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x  # isort: skip
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux_edit as xe  # isort: skip
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j  # isort: skip
from ansible_collections.edgeslim.jetson.plugins.modules import extlinux, units  # isort: skip
from bootdevice import REPO, Device, compiled  # isort: skip
from conftest import FIXTURES  # isort: skip
from fake_systemd import FakeSystemd, jetson_units  # isort: skip
from modhelper import run_module  # isort: skip

MANAGED = "edgeslim"
SWIOTLB = {"slots": 2048}
CARVEOUTS = {"recipes": ["headless"], "fdt_method": "overlays"}
CHECKS = {"swiotlb": {"units_active": ["ssh.service"]}}


def load_checker() -> Any:
    spec = importlib.util.spec_from_file_location("edgeslim_boot_commit_faults",
                                                  REPO / "roles/boot_commit/files/edgeslim-boot-commit.py")  # fmt: skip
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CHECKER = load_checker()


def parse(path: Path) -> tuple[x.ExtlinuxConfig | None, list[str]]:
    """extlinux.conf as the boot chain reads it, and what is wrong with it (unparsable, DEFAULT naming no entry)."""
    try:
        conf = x.parse_extlinux(xe.read_conf(str(path)), str(path))
    except (OSError, x.ExtlinuxError) as exc:
        return None, [f"extlinux.conf unreadable: {exc}"]
    if conf.default_label is None or conf.entry(conf.default_label) is None:
        return conf, [f"DEFAULT {conf.default_label!r} names no entry"]
    return conf, []


def boot_files_of(conf: x.ExtlinuxConfig, label: str) -> list[str]:
    entry = conf.require(label)
    paths = [conf.get(entry, k) for k in ("LINUX", "INITRD", "FDT")]
    return [p for p in paths + x.split_overlays(conf.get(entry, "OVERLAYS")) if p]


class EngineBoot(Op):
    """edgeslim.jetson.engine phase=apply with boot layers on the fake Jetson of bootdevice.py (r36-stock.conf)."""

    def __init__(self, tmp: Path, tree: Path, layers: tuple[str, ...]) -> None:
        self.name = "engine boot apply (" + " + ".join(layers) + ")"
        self.layers = layers
        self.device = CutDevice(tmp, tree)
        self.tmp = str(tmp)
        self.roots = [self.tmp]
        d = self.device
        request: dict[str, Any] = {}
        if "swiotlb" in layers:
            request.update(swiotlb=SWIOTLB, checks=CHECKS)
        if "carveouts" in layers:
            probe = d.run("probe", d.boot(carveouts=CARVEOUTS))
            assert not probe.get("failed"), probe.get("msg")
            request["carveouts"] = {**CARVEOUTS, "dtbo_b64": compiled(probe["boot"]["carveouts"]["dts"], tmp)}
        self.request = d.boot(**request)
        self.initial = fs_snapshot(self.tmp)

    def reset(self) -> None:
        fs_restore(self.tmp, self.initial)
        self.device.enabled = False

    def engine(self, cut: PowerCut | None) -> dict[str, Any]:
        self.device.cut = cut
        try:
            return self.device.run("apply", self.request)
        finally:
            self.device.cut = None

    def run(self, cut: PowerCut) -> None:
        res = self.engine(cut)
        assert res.get("changed") and not res.get("failed"), res.get("msg")

    def final(self) -> dict[str, Any]:
        return {"files": fs_snapshot(self.tmp), "enabled": self.device.enabled}

    # ---- invariants -------------------------------------------------------------------------------------------
    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.tmp)

    def check(self, clean: dict[str, Any]) -> list[str]:
        d = self.device
        crashed, enabled = fs_snapshot(self.tmp), d.enabled
        found = self.state_violations(clean, crashed)
        found += self.rollback_violations()
        fs_restore(self.tmp, crashed)
        d.enabled = enabled
        found += self.rerun_violations(clean)
        return found

    def state_violations(self, clean: dict[str, Any], now: dict[str, Any]) -> list[str]:
        d = self.device
        found: list[str] = []
        conf, problems = parse(d.conf)
        found += problems
        if conf is None:
            return found
        if conf.default_label == MANAGED:
            for layer in self.layers:
                record = d.state / "pending" / f"{layer}.json"
                if not record.exists():
                    found.append(f"DEFAULT is the managed entry but {layer} is not armed (no pending record)")
                    continue
                doc, error = CHECKER.read_pending(str(record))
                if error:
                    found.append(f"DEFAULT is the managed entry but the {layer} pending record is invalid: {error}")
                elif conf.entry(doc["previous_default"]) is None:
                    found.append(f"the {layer} pending record reverts to {doc['previous_default']!r}, no entry")
            for path in (self.request["checker"]["program_path"], self.request["checker"]["unit_path"]):
                rel = self.rel(path)
                if (now.get(rel) or [None] * 3)[2] != (clean["files"].get(rel) or [None] * 3)[2]:
                    found.append(f"DEFAULT is the managed entry but the checker file {rel} is missing or partial")
            if not d.enabled:
                found.append("DEFAULT is the managed entry but the checker unit is not enabled")
            for path in boot_files_of(conf, MANAGED):
                rel = self.rel(os.path.join(str(d.root), path.lstrip("/")))
                if now.get(rel) is None or now[rel][2] != (clean["files"].get(rel) or [None] * 3)[2]:
                    found.append(f"the managed entry boots {path}, which is missing or not complete")
        try:
            doc, _warning = j.load_journal_fallback(d.journal)
        except j.JournalError as exc:
            return [*found, f"journal and its copy unreadable: {exc}"]
        changed_conf = d.conf.read_bytes() != self.initial[self.rel(str(d.conf))][2]
        boot_changed = [r for r in file_changes(self.initial, now, "root/boot")
                        if not os.path.basename(r).startswith("extlinux.conf")]  # the file and its backups  # fmt: skip
        for layer in self.layers:
            armed = (d.state / "pending" / f"{layer}.json").exists()
            mine = boot_changed if layer == "carveouts" else []
            record = doc["layers"].get(layer)
            if (changed_conf or armed or mine) and record is None:
                found.append(f"the {layer} change is on the device (extlinux.conf changed: {changed_conf}, armed: "
                             f"{armed}, boot files: {mine}) but the journal has no {layer} record")  # fmt: skip
                continue
            if record is not None and record.get("previous_default") != "primary":
                found.append(f"the {layer} record returns to {record.get('previous_default')!r}, not 'primary'")
            if record is not None and layer == "carveouts":
                recorded = {self.rel(p) for p in (record.get("boot_files") or {})}
                missing = [r for r in mine if r not in recorded]
                if missing:
                    found.append(f"boot files changed but not journaled: {missing}")
        return found

    def checker_run(self, args: list[str], check: bool) -> tuple[int, str, str]:
        return self.device(["/bin/systemctl", *args])

    def rollback_violations(self) -> list[str]:
        """The roles' rollback (roles/boot_commit/tasks/rollback.yml): the engine's rollback phase for the layers,
        from the journal as the cut left it."""
        d = self.device
        found: list[str] = []
        res = d.run("rollback", self.request, layers=list(self.layers))
        if res.get("failed"):
            found.append(f"rollback failed: {res.get('msg')}")
        for layer, rec in (res.get("records") or {}).items():
            if rec["status"] == "failed":
                found.append(f"rollback of {layer} failed: {rec['details'].get('error')}")
        after = fs_snapshot(self.tmp)
        conf_rel = self.rel(str(d.conf))
        if after.get(conf_rel) != self.initial[conf_rel]:
            found.append("after the rollback extlinux.conf is not byte-identical to the original")
        for rel in file_changes(self.initial, after, "root/boot"):
            if os.path.basename(rel).startswith("extlinux.conf.edgeslim-"):
                continue  # a backup of extlinux.conf, kept by design
            found.append(f"after the rollback {rel} differs from the original")
        for rel in file_changes(self.initial, after, "etc"):
            found.append(f"after the rollback the checker file {rel} is still there")
        if d.enabled:
            found.append("after the rollback the checker unit is still enabled")
        left = sorted((d.state / "pending").glob("*.json"))
        if left:
            found.append(f"after the rollback records are pending: {[p.name for p in left]}")
        try:
            layers = j.load_journal(d.journal)["layers"]
        except j.JournalError as exc:
            found.append(f"after the rollback the journal is unreadable: {exc}")
        else:
            if any(layer in layers for layer in self.layers):
                found.append(f"after the rollback the journal still has {sorted(layers)}")
        return found

    def rerun_violations(self, clean: dict[str, Any]) -> list[str]:
        """A later run of the same apply succeeds from the cut state and leaves what a clean run leaves."""
        res = self.engine(None)
        if res.get("failed"):
            return [f"a later run fails: {res.get('msg')}"]
        after = fs_snapshot(self.tmp)
        found = []
        changes = file_changes(clean["files"], after, "root/boot", modes=False)
        for rel in changes + file_changes(clean["files"], after, "etc", modes=False):
            if os.path.basename(rel).startswith("extlinux.conf.edgeslim-"):
                continue  # the backups are stamped with the time of the run
            found.append(f"after a later run {rel} differs from a clean run's")
        for layer in self.layers:
            _doc, error = CHECKER.read_pending(str(self.device.state / "pending" / f"{layer}.json"))
            if error:
                found.append(f"after a later run the {layer} pending record is invalid: {error}")
        if not self.device.enabled:
            found.append("after a later run the checker unit is not enabled")
        return found


class CutDevice(Device):
    """The fake Jetson whose systemctl calls that change the system are injection points too."""

    cut: PowerCut | None = None

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        if self.cut is not None and argv[1:2] and argv[1] in ("enable", "disable", "daemon-reload"):
            self.cut.point("systemctl " + " ".join(argv[1:]))
        return super().__call__(argv)


class ExtlinuxModule(Op):
    """edgeslim.jetson.extlinux on a fixture: the managed entry with swiotlb= made DEFAULT (``edit``), or from the
    edited file the managed entry removed and DEFAULT put back from the journal (``restore``)."""

    def __init__(self, tmp: Path, fixture: str, action: str) -> None:
        self.name = f"extlinux module {action} ({fixture})"
        self.tmp, self.action = str(tmp), action
        self.roots = [self.tmp]
        root = tmp / "root"
        text = (FIXTURES / "extlinux" / fixture).read_text()
        stock = x.parse_extlinux(text, fixture)
        for entry in stock.entries:  # every file an entry boots, so that every entry is bootable
            for f in boot_files_of(stock, entry.label):
                (root / f.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (root / f.lstrip("/")).write_text(f"contents of {f}")
        (root / "boot/extlinux").mkdir(exist_ok=True)
        self.conf = root / "boot/extlinux/extlinux.conf"
        self.conf.write_text(text)
        self.journal = str(tmp / "var/journal.json")
        self.args = {"path": str(self.conf), "root": str(root), "managed_label": MANAGED,
                     "journal_path": self.journal, "journal_layer": "swiotlb"}  # fmt: skip
        self.stock = fs_snapshot(self.tmp)
        if action == "restore":
            res = run_module(extlinux.main, {**self.args, "kernel_args": {"swiotlb": 2048}})
            assert res["changed"] and not res.get("failed"), res.get("msg")
        self.initial = fs_snapshot(self.tmp)

    def module(self, state: str) -> dict[str, Any]:
        extra = {"kernel_args": {"swiotlb": 2048}} if state == "present" else {}
        return run_module(extlinux.main, {**self.args, "state": state, **extra})

    def reset(self) -> None:
        fs_restore(self.tmp, self.initial)

    def run(self, cut: PowerCut) -> None:
        res = self.module("present" if self.action == "edit" else "absent")
        assert res.get("changed") and not res.get("failed"), res.get("msg")

    def final(self) -> dict[str, Any]:
        return fs_snapshot(self.tmp)

    def check(self, clean: dict[str, Any]) -> list[str]:
        conf, found = parse(self.conf)
        if conf is None:
            return found
        if conf.entry(MANAGED) is not None:
            for path in boot_files_of(conf, MANAGED):
                if not os.path.exists(os.path.join(str(self.conf.parents[2]), path.lstrip("/"))):
                    found.append(f"the managed entry boots {path}, which is missing")
        try:
            doc, _warning = j.load_journal_fallback(self.journal)
        except j.JournalError as exc:
            return [*found, f"journal and its copy unreadable: {exc}"]
        record = doc["layers"].get("swiotlb")
        if conf.entry(MANAGED) is not None and record is None:
            found.append("the managed entry is in extlinux.conf but the journal has no record to remove it with")
        crashed = fs_snapshot(self.tmp)
        # The rollback: the module's state=absent from whatever the cut left.
        res = self.module("absent")
        if res.get("failed"):
            found.append(f"rollback (state=absent) fails: {res.get('msg')}")
        elif self.conf.read_bytes() != self.stock["root/boot/extlinux/extlinux.conf"][2]:
            found.append("after the rollback extlinux.conf is not byte-identical to the original")
        # A later run of the same call succeeds and leaves what a clean run leaves.
        fs_restore(self.tmp, crashed)
        res = self.run_again()
        if res.get("failed"):
            found.append(f"a later run fails: {res.get('msg')}")
        elif self.conf.read_bytes() != clean["root/boot/extlinux/extlinux.conf"][2]:
            found.append("after a later run extlinux.conf differs from a clean run's")
        return found

    def run_again(self) -> dict[str, Any]:
        return self.module("present" if self.action == "edit" else "absent")


class UnitsApply(Op):
    """edgeslim.jetson.units (the services layer's plan, journal and batch, shared with the engine) on the fake
    systemd; each systemctl call that changes a unit or the default target is an injection point too."""

    PROFILE: ClassVar[dict[str, Any]] = {"mask": ["gdm3", "packagekit", "nvargus-daemon"],
                                         "disable": ["avahi-daemon", "ModemManager", "bluetooth", "cups", "rpcbind"],
                                         "protected": ["ssh.service", "nvgetty.service"],
                                         "default_target": "multi-user.target"}  # fmt: skip
    CHANGING = ("mask", "unmask", "disable", "enable", "stop", "start", "restart", "set-default", "daemon-reload")

    def __init__(self, tmp: Path) -> None:
        self.name = "units apply (services journal)"
        self.tmp = str(tmp)
        self.roots = [self.tmp]
        self.journal = str(tmp / "var/journal.json")
        self.stock = FakeSystemd(jetson_units())
        self.fake = copy.deepcopy(self.stock)
        self.cut: PowerCut | None = None
        os.makedirs(tmp / "var")
        self.initial = fs_snapshot(self.tmp)

    def systemctl(self, argv: list[str]) -> tuple[int, str, str]:
        verbs = [a for a in argv[1:] if not a.startswith("-")]
        if self.cut is not None and verbs and verbs[0] in self.CHANGING:
            self.cut.point("systemctl " + " ".join(argv[1:]))
        return self.fake(argv)

    def module(self, cut: PowerCut | None, **args: Any) -> dict[str, Any]:
        self.cut = cut
        try:
            return run_module(units.main, {"journal_path": self.journal, "verify_delay": 0, **args},
                              run_command=self.systemctl, bin_path="/bin/systemctl")  # fmt: skip
        finally:
            self.cut = None

    def reset(self) -> None:
        fs_restore(self.tmp, self.initial)
        self.fake = copy.deepcopy(self.stock)

    def run(self, cut: PowerCut) -> None:
        res = self.module(cut, **self.PROFILE)
        assert res.get("changed") and not res.get("failed"), res.get("msg")

    def final(self) -> dict[str, Any]:
        return self.fake.snapshot()

    def check(self, clean: dict[str, Any]) -> list[str]:
        found: list[str] = []
        before, now = self.stock.snapshot(), self.fake.snapshot()
        changed = sorted(u for u in now["units"] if now["units"][u] != before["units"][u])
        try:
            doc, _warning = j.load_journal_fallback(self.journal)
        except j.JournalError as exc:
            return [f"journal and its copy unreadable: {exc}"]
        layer = doc["layers"].get("services") or {}
        journaled = set(layer.get("units") or {})
        missing = [u for u in changed if u not in journaled]
        if missing:
            found.append(f"units changed but not journaled: {missing}")
        if now["default"] != before["default"] and not layer.get("default_target"):
            found.append("the default target changed but the journal does not hold the previous one")
        crashed, fake = fs_snapshot(self.tmp), copy.deepcopy(self.fake)
        res = self.module(None, state="restore")
        if res.get("failed"):
            found.append(f"rollback (state=restore) fails: {res.get('msg')}")
        elif self.fake.snapshot() != before:
            diff = {u: v for u, v in self.fake.snapshot()["units"].items() if v != before["units"][u]}
            found.append(f"after the rollback the units are not as before: {diff or self.fake.default_target}")
        fs_restore(self.tmp, crashed)
        self.fake = fake
        res = self.module(None, **self.PROFILE)
        if res.get("failed"):
            found.append(f"a later run fails: {res.get('msg')}")
        elif self.fake.snapshot() != clean:
            found.append("after a later run the units differ from a clean run's")
        return found


class JournalUpdate(Op):
    """journal.update_layer on a journal of generation 3 (services and swiotlb records): the carveouts record
    added. After each cut, and also with journal.json then zeroed (a damage after the write), the journal or its
    copy must give the old or the new document, and clearing the layer (fallback, as a restore does) the old one."""

    def __init__(self, tmp: Path, damage: bool = False) -> None:
        self.name = "journal update" + (" (journal.json zeroed after the cut)" if damage else "")
        self.tmp, self.damage = str(tmp), damage
        self.roots = [self.tmp]
        self.path = str(tmp / "var/journal.json")
        doc = {"version": 1, "generation": 3, "layers": {
            "services": {"created": "2026-11-30T01:00:00Z", "units": {"cups.service": {"enabled": "enabled"}}},
            "swiotlb": {"created": "2026-11-30T01:00:05Z", "path": "/boot/extlinux/extlinux.conf"}}}  # fmt: skip
        j.write_journal(self.path, doc)
        self.old = j.load_journal(self.path)
        self.record = {"created": "2026-11-30T02:00:00Z", "path": "/boot/extlinux/extlinux.conf"}
        self.new = {**self.old, "generation": 4, "layers": {**self.old["layers"], "carveouts": self.record}}
        self.initial = fs_snapshot(self.tmp)

    def reset(self) -> None:
        fs_restore(self.tmp, self.initial)

    def run(self, cut: PowerCut) -> None:
        j.update_layer(self.path, "carveouts", lambda _old: dict(self.record))

    def final(self) -> dict[str, Any]:
        return j.load_journal(self.path)

    def check(self, clean: dict[str, Any]) -> list[str]:
        found: list[str] = []
        try:
            main = j.load_journal(self.path)
        except j.JournalError as exc:
            found.append(f"journal.json unreadable after the cut: {exc}")
        else:
            if main not in (self.old, clean):
                found.append("journal.json is neither the old nor the new document")
        if self.damage:
            with open(self.path, "wb"):
                pass
        try:
            doc, _warning = j.load_journal_fallback(self.path)
        except j.JournalError as exc:
            return [*found, f"neither the journal nor its copy is usable: {exc}"]
        if doc["layers"] not in (self.old["layers"], clean["layers"]):
            found.append("the journal read is neither the old nor the new document")
        warnings: list[str] = []
        try:
            j.update_layer(self.path, "carveouts", lambda _old: None, fallback=True, warnings=warnings)
            back = j.load_journal(self.path)
        except j.JournalError as exc:
            return [*found, f"clearing the layer (as a restore does) fails: {exc}"]
        if back["layers"] != self.old["layers"]:
            found.append("after clearing the layer the journal is not the old one")
        return found
