# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deadline of a slim run on the device: a run whose controller vanished (connection lost, ansible-playbook
killed, laptop closed) after ``apply`` changed the device is restored on the device by itself.

``arm`` (the engine's apply, right after the journal is written and before the first change; verify, when the run
goes on after its reboot) writes the deadline record ``<journal dir>/deadline/<run id>.json`` (which layers this run
changes, where the boot files, the checker, the lock and the metrics file are) and starts a transient timer with
``systemd-run --on-active=<seconds> --unit edgeslim-deadline-<run id>`` (an argv list, no shell). Its service runs
the restore program (``main`` below) with the journal path, the run id and the record. Arming again with the same
run id while the timer waits changes nothing. ``disarm`` stops the timer, resets the units and removes the record:
a timer that fires after that finds no record and does nothing. Releasing the lock of a run disarms its deadline
(``release_lock``: the engine's end of the run, a failure that already restored, and the caller's rescue that gives
the lock back with edgeslim.jetson.device_lock).

The restore program is this file with the module_utils it imports, written by apply as one zip application
(``bundle``: ``python3 edgeslim-deadline.pyz`` runs its ``__main__.py``). The sources are those of the modules the
engine itself runs with (read through their loaders, so it works from AnsiballZ's zip as from a checkout): the
restore is the same code as the rollback, not a second copy, and matches the engine that armed it. When it fires it

1. stops this run's lock holder ``edgeslim-lock-<run id>`` and takes the device lock under its own name
   (``<run id>-deadline``); while another run holds it, it restores nothing (that run manages the device now);
2. restores the services layer as the engine's failure path does (units_apply.rollback_services: the journald
   drop-in, every journaled unit and the default target, journald restarted);
3. restores each boot layer of the run as the roles' rollback does: the managed entry removed or this layer's values
   put back (extlinux_edit.remove_managed, the extlinux module's ``state: absent``; a Secure Boot device's
   extlinux.conf signed again), the overlay, its source and the merged DTB removed (dt_overlay's ``state: absent``),
   the layer's pending record dropped and the checker disarmed when nothing else is pending;
4. writes the metrics file (``rolled_back``, or ``failed`` when a step failed), gives the lock back and removes the
   record.

It never raises: each step is logged to stderr (the journal of the unit, ``journalctl -u edgeslim-deadline-<run
id>``), and a failed step leaves its journal layer for a rollback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from typing import Any

from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_apply as ba
from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_sign as sg
from ansible_collections.edgeslim.jetson.plugins.module_utils import devlock
from ansible_collections.edgeslim.jetson.plugins.module_utils import dt_overlay as ov
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux_edit as xe
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j
from ansible_collections.edgeslim.jetson.plugins.module_utils import metrics as mt
from ansible_collections.edgeslim.jetson.plugins.module_utils import units_apply as ua

UNIT_PREFIX = "edgeslim-deadline-"
# 30 min. The deadline covers one boot: from apply's first change to the end of the run, or to the reboot that
# follows apply (a transient timer does not survive it; after the reboot the boot-commit checker decides the boot
# layers, and verify arms it again once it holds the lock in the new boot, until finish). The longest wait that is
# not a vanished controller inside one boot: apply itself (the unit stops, 120 s at most; MemAvailable settling,
# 30 s; the boot files), then the controller's tasks up to the reboot or the end (the report, the reboot command) or,
# after verify (which waits up to 600 s for the checker's verdict before it arms again), the after snapshot and the
# metrics file: a few minutes. 1800 s is several times that and far below the lock's ttl (7200 s), so a dead run is
# restored well before its lock would have expired.
DEFAULT_SECONDS = 1800
PROGRAM_PATH = "/usr/local/lib/edgeslim/edgeslim-deadline.pyz"
LOCK_SUFFIX = "-deadline"
PACKAGES = ("ansible_collections.edgeslim.jetson.plugins.module_utils", "ansible.module_utils")
MAIN = (
    "import sys\nfrom ansible_collections.edgeslim.jetson.plugins.module_utils.deadline import main\nsys.exit(main())\n"
)


class DeadlineError(Exception):
    pass


def unit_name(run_id: str) -> str:
    """``edgeslim-deadline-<run id>``: the timer and the service share the name."""
    try:
        return UNIT_PREFIX + devlock.check_run_id(run_id)
    except devlock.LockError as exc:
        raise DeadlineError(exc.msg) from None


def record_path(journal_path: str, run_id: str) -> str:
    """The deadline record lives beside the journal (it must outlast a reboot: verify arms again from it)."""
    return os.path.join(os.path.dirname(journal_path), "deadline", devlock.check_run_id(run_id) + ".json")


def lock_run_id(run_id: str) -> str:
    return run_id[: 64 - len(LOCK_SUFFIX)] + LOCK_SUFFIX


def arm_argv(systemd_run: str, seconds: int, run_id: str, python: str, program: str, journal_path: str,
             record: str) -> list[str]:  # fmt: skip
    """The transient timer (and its service) that runs the restore program once ``seconds`` have passed."""
    if seconds <= 0:
        raise DeadlineError(f"deadline must be > 0 seconds to arm, got {seconds}")
    return [
        systemd_run,
        "--unit",
        unit_name(run_id),
        f"--on-active={seconds}",
        "--timer-property=AccuracySec=1s",
        "--timer-property=RemainAfterElapse=no",
        f"--timer-property=Description=edgeslim: deadline of run {run_id}",
        "--collect",
        "--quiet",
        "-p",
        f"Description=edgeslim: restore run {run_id} unless it completes",
        "--",
        python,
        program,
        "--journal",
        journal_path,
        "--run-id",
        run_id,
        "--record",
        record,
    ]


def bundle(modules: dict[str, Any] | None = None) -> bytes:
    """The restore program as a zip application: ``__main__.py`` and the source of every loaded module of
    PACKAGES (the code the engine runs with), each package's parents as empty packages. Stable bytes (sorted names,
    fixed times) so an unchanged program is not written again."""
    modules = sys.modules if modules is None else modules
    files: dict[str, str] = {"__main__.py": MAIN}
    for name in sorted(modules):
        mod = modules[name]
        if mod is None or not any(name == p or name.startswith(p + ".") for p in PACKAGES):
            continue
        is_package = getattr(getattr(mod, "__spec__", None), "submodule_search_locations", None) is not None
        path = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
        loader = getattr(mod, "__loader__", None)
        try:
            source = loader.get_source(name) if loader is not None else None
        except (ImportError, OSError):
            source = None
        if source is None and not is_package:
            if name.startswith(PACKAGES[0]):
                raise DeadlineError(f"cannot read the source of {name} for the restore program")
            continue  # a synthetic module (six.moves): made by its package when imported
        files[path] = source or ""
    for path in list(files):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            files.setdefault("/".join(parts[:i]) + "/__init__.py", "")
    if "ansible_collections/edgeslim/jetson/plugins/module_utils/deadline.py" not in files:
        raise DeadlineError("the restore program's own module is not loaded")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(files):
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[path])
    return out.getvalue()


def new_record(run_id: str, journal_path: str, lock_path: str, seconds: int, services: bool, boot: dict | None,
               boot_layers: list[str], metrics: dict | None) -> dict[str, Any]:  # fmt: skip
    """What the restore program needs, with no file contents (the checker's text stays out)."""
    b = None
    if boot is not None:
        b = {k: boot[k] for k in ("extlinux_path", "root", "boot_root", "managed_label", "managed_menu_label",
                                  "backup", "backup_keep", "sign_command")}  # fmt: skip
        b["checker"] = {k: v for k, v in (boot.get("checker") or {}).items() if k not in ("program", "unit")}
        b["carveouts"] = {k: (boot.get("carveouts") or {}).get(k) for k in ("overlay_path", "merged_fdt_path")}
    return {
        "run_id": run_id,
        "journal_path": journal_path,
        "lock_path": lock_path,
        "seconds": seconds,
        "services": services,
        "boot": b,
        "boot_layers": [layer for layer in ba.LAYERS if layer in boot_layers],
        "metrics": metrics,
        "armed": j.utc_now(),
    }


def read_record(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        return None
    if not isinstance(doc, dict):
        raise DeadlineError(f"{path}: not a deadline record")
    return doc


def merge_record(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Arming again in the same run adds layers (apply arms for the services first, then for the boot layers)."""
    if old is None or old.get("run_id") != new["run_id"]:
        return new
    layers = set(old.get("boot_layers") or []) | set(new["boot_layers"])
    return {**old, **{k: v for k, v in new.items() if v is not None and k != "armed"},
            "services": bool(old.get("services")) or new["services"],
            "boot_layers": [layer for layer in ba.LAYERS if layer in layers]}  # fmt: skip


def timer_active(run: Any, systemctl: str, run_id: str) -> bool:
    rc, out, _err = run([systemctl, "show", "-p", "ActiveState", unit_name(run_id) + ".timer"])
    return rc == 0 and "ActiveState=active" in out.split()


def arm(module: Any, run_id: str, seconds: int, journal_path: str, program_path: str,
        record: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """Write the record (``None``: keep the one of this run, as verify does after the reboot; without one nothing is
    armed) and the program, then start the timer unless it already waits. Raises DeadlineError."""
    path = record_path(journal_path, run_id)
    replace = module.atomic_move
    if record is None:
        if read_record(path) is None:
            return {"armed": False, "reason": f"no deadline record {path}"}
    else:
        doc = merge_record(read_record(path), record)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        ba.write_json(path, doc, replace)
    program = bundle()
    if ov.read(program_path) != program:
        ov.install(program_path, program, replace, 0o755)
    systemctl = module.get_bin_path("systemctl", required=True)
    unit = unit_name(run_id)
    out = {"armed": True, "unit": unit + ".timer", "record": path, "program": program_path, "seconds": seconds}
    if timer_active(module.run_command, systemctl, run_id):
        return {**out, "changed": False}
    module.run_command([systemctl, "reset-failed", unit + ".timer", unit + ".service"])
    systemd_run = module.get_bin_path("systemd-run", required=True)
    argv = arm_argv(systemd_run, seconds, run_id, sys.executable, program_path, journal_path, path)
    rc, _out, err = module.run_command(argv)
    if rc != 0:
        raise DeadlineError(f"could not arm the deadline {unit}.timer: {err.strip()}")
    return {**out, "changed": True}


def disarm(module: Any, run_id: str, journal_path: str) -> dict[str, Any]:
    """Stop the timer (never the service: a restore already running completes), reset both units, remove the record.
    Best effort: returns what it did, ``error`` when the timer could not be stopped."""
    systemctl = module.get_bin_path("systemctl", required=True)
    unit = unit_name(run_id)
    out: dict[str, Any] = {"armed": False, "unit": unit + ".timer"}
    if timer_active(module.run_command, systemctl, run_id):
        rc, _out, err = module.run_command([systemctl, "stop", unit + ".timer"])
        if rc != 0:
            out["error"] = f"could not stop {unit}.timer: {err.strip()}"
    module.run_command([systemctl, "reset-failed", unit + ".timer", unit + ".service"])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(journal_path, run_id))
        out["record_removed"] = True
    return out


def release_lock(module: Any, lock: Any, journal_path: str) -> dict[str, Any]:
    """Give the device lock of run X back and disarm the deadline of run X: the one way a run's lock is released
    (the engine's end of the run, edgeslim.jetson.device_lock's V(released) in the caller's rescue). The deadline
    goes first, so its timer cannot fire between the two and restore a device whose run has ended. The lock's
    release result with ``deadline`` (what disarm did; ``error`` when the timer could not be stopped, also a
    warning). Check mode disarms nothing. Raises the lock's LockError (its ``extra`` carries ``deadline``)."""
    deadline: dict[str, Any] = {"armed": None, "skipped": "check mode"}
    if not module.check_mode:
        try:
            deadline = disarm(module, lock.run_id, journal_path)
        except (DeadlineError, devlock.LockError, OSError) as exc:
            deadline = {"armed": None, "error": str(getattr(exc, "msg", exc))}
        if deadline.get("error"):
            module.warn(f"edgeslim deadline: {deadline['error']}")
    try:
        released = lock.release()
    except devlock.LockError as exc:
        exc.extra["deadline"] = deadline
        raise
    return {**released, "deadline": deadline}


# ---- the restore program (runs on the device when the timer fires) -------------------------------------------------
class Device:
    """What the module_utils take from an AnsibleModule (``run_command``, ``get_bin_path``, ``atomic_move``,
    ``warn``), for the restore program that runs outside Ansible."""

    PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
    check_mode = False

    def __init__(self, log: Any = None) -> None:
        self.log = log or self.stderr
        self.warnings: list[str] = []

    @staticmethod
    def stderr(msg: str) -> None:
        """The default log: one line on stderr (the journal of the deadline's service)."""
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    def run_command(self, argv: list[str], environ_update: dict | None = None, **_kwargs: Any) -> tuple[int, str, str]:
        env = {**os.environ, **(environ_update or {})}
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            return 127, "", str(exc)
        return proc.returncode, proc.stdout, proc.stderr

    def get_bin_path(self, name: str, required: bool = False) -> str | None:
        found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *self.PATH]))
        if found is None and required:
            raise DeadlineError(f"{name} not found")
        return found

    def atomic_move(self, src: str, dest: str) -> None:
        if os.path.exists(dest):
            st = os.stat(dest)
            os.chmod(src, st.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):
                os.chown(src, st.st_uid, st.st_gid)
        os.rename(src, dest)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.log(f"warning: {msg}")


def restore_boot_layer(dev: Any, b: dict[str, Any], journal_path: str, layer: str, check_mode: bool = False,
                       strict_sign: bool = False) -> dict[str, Any]:  # fmt: skip
    """One boot layer back from its journal record: extlinux ``state: absent`` (the managed entry, or this layer's
    part of it while another layer still boots through it), the carveouts overlay files removed, the pending record
    dropped and the checker disarmed when nothing else is pending. A layer without a journal record was not changed
    by edgeslim: left alone. Used by the engine's ``rollback`` phase (``strict_sign``: a restored extlinux.conf that
    cannot be signed again raises SignError, the journal layer kept) and by the deadline's restore (not strict: a
    warning, the previous signature put back). ``check_mode``: what would change, nothing written. Returns
    ``journaled``, ``changed`` (the file), ``diff``, ``default_label`` (what the file boots afterwards), ``removed``."""
    out: dict[str, Any] = {"layer": layer, "journaled": False, "changed": False, "removed": []}
    p = ba.edit_params(b, journal_path, layer, state="absent", default_label=None)
    doc = j.load_journal(journal_path)  # strictly, as the extlinux module (docs/journal.md, Recovery)
    journaled = j.get_layer(doc, layer)
    before = xe.read_conf(p["path"])
    conf = x.parse_extlinux(before, p["path"])
    if journaled is None:
        return {**out, "default_label": conf.default_label, "note": "no journal record: not changed by edgeslim"}
    out["journaled"] = True
    xe.remove_managed(conf, p, journaled, xe.sharing_layers(doc, p), out)
    after = conf.render()
    out["default_label"] = conf.default_label
    out["changed"] = after != before
    if out["changed"]:
        out["diff"] = {"before": before, "after": after, "before_header": p["path"], "after_header": p["path"]}
    overlays: list[str] = []
    if layer == "carveouts":
        c = b.get("carveouts") or {}
        dest = ba.host_path(b, c.get("overlay_path") or ba.CARVEOUTS_OPTIONS["overlay_path"]["default"])
        merged = ba.host_path(b, c.get("merged_fdt_path") or ba.CARVEOUTS_OPTIONS["merged_fdt_path"]["default"])
        for path in (dest, merged):
            ov.confine(path, ba.host_path(b, b["boot_root"]), "boot file")
        overlays = ov.present_files(dest, merged)
        out["removed"] = overlays
    if check_mode:
        return out
    if out["changed"]:
        xe.write_conf(p, before, after, lambda: None, dev.atomic_move, dev.warn)
        if b.get("sign_command") and (os.path.exists(p["path"] + sg.SIG_SUFFIX) or ba.secure_boot(b)):
            if strict_sign:
                signer = sg.Signer(b["sign_command"])
                try:
                    signer.sign(p["path"])
                except sg.SignError:
                    # The file and its signature as they were, the journal layer kept: a re-run tries again.
                    signer.put_back()
                    xe.write_conf({**p, "backup": False}, after, before, lambda: None, dev.atomic_move, dev.warn)
                    raise
                signer.drop()
                out["signed"] = [p["path"]]
            else:
                out["sign_warnings"] = sg.resign(b["sign_command"], [p["path"]], dev.warn)
    # cleared after the file is written, as the extlinux module does (a cut in between leaves what a re-run needs)
    j.update_layer(journal_path, layer, lambda _old: None, replace=dev.atomic_move)
    ov.remove_files(overlays)
    checker = b.get("checker") or {}
    if checker:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(ba.pending_dir(checker), f"{layer}.json"))
        systemctl = dev.get_bin_path("systemctl", required=True)
        errors = ba.disarm_if_idle(checker, lambda args, _check: dev.run_command([systemctl, *args]))
        if errors:
            raise DeadlineError("; ".join(errors))
    return out


def restore(dev: Any, rec: dict[str, Any]) -> dict[str, Any]:
    """Steps 1-4 of the module docstring for the record ``rec``; never raises."""
    log = dev.log
    run_id, journal_path = rec["run_id"], rec["journal_path"]
    out: dict[str, Any] = {"run_id": run_id, "steps": [], "restored": True}

    def step(name: str, ok: bool, detail: Any) -> None:
        out["steps"].append({"step": name, "ok": ok, "detail": detail})
        log(f"edgeslim deadline {run_id}: {name}: {'ok' if ok else 'FAILED'}: {detail}")
        if not ok:
            out["restored"] = False

    lock = None
    try:
        systemctl = dev.get_bin_path("systemctl", required=True)
        holder = devlock.unit_name(run_id)
        rc, _o, err = dev.run_command([systemctl, "stop", holder])
        step("stop the run's lock holder", rc == 0, holder if rc == 0 else err.strip())
        lock = devlock.DeviceLock(dev, rec.get("lock_path") or devlock.DEFAULT_PATH, lock_run_id(run_id),
                                  holder={"playbook": "deadline", "user": "edgeslim-deadline"})  # fmt: skip
        lock.acquire()
        step("take the device lock", True, lock.unit)
    except (devlock.LockError, DeadlineError) as exc:
        step("take the device lock", False, f"{getattr(exc, 'msg', exc)}; nothing restored, the journal is kept")
        return out
    summary: dict[str, Any] = {}
    if rec.get("services"):
        res = ua.rollback_services(dev, ua.Runner(dev, systemctl), journal_path, "services")
        step("services", bool(res["restored"]), res.get("restore_error") or res)
        summary["services"] = {"status": "rolled_back" if res["restored"] else "failed", "reclaimed_mb": None}
    for layer in reversed(rec.get("boot_layers") or []):
        try:
            res = restore_boot_layer(dev, rec["boot"], journal_path, layer)
            step(layer, True, res)
            summary[layer] = {"status": "rolled_back", "reclaimed_mb": None}
        except Exception as exc:  # best effort: every step is reported, the next one still runs
            step(layer, False, f"{type(exc).__name__}: {exc}; the journal layer is kept")
            summary[layer] = {"status": "failed", "reclaimed_mb": None}
    mp = rec.get("metrics")
    if mp:
        result = "rolled_back" if out["restored"] else "failed"
        try:
            written = mt.write_textfile(dev, {**mp, "result": result, "carveouts_drift": None, "timestamp": None,
                                              "layers": mt.layer_figures(mp["playbook"], summary)}, False)  # fmt: skip
            step("metrics file", True, f"{written['path']}: {result}")
        except (mt.MetricsError, ValueError, TypeError, OSError) as exc:
            step("metrics file", False, str(exc))
    try:
        lock.release()
        step("give the device lock back", True, lock.unit)
    except devlock.LockError as exc:
        step("give the device lock back", False, exc.msg)
    return out


def main(argv: list[str] | None = None, dev: Any = None) -> int:
    """The restore program's entry point (the deadline's service). Exit 0: restored (or nothing to do), 1: a step
    failed (the journal keeps what was not restored)."""
    parser = argparse.ArgumentParser(prog="edgeslim-deadline")
    parser.add_argument("--journal", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args(argv)
    dev = dev or Device()
    try:
        rec = read_record(args.record)
        if rec is None:
            dev.log(f"edgeslim deadline {args.run_id}: no record {args.record}: the run completed; nothing to do")
            return 0
        if rec.get("run_id") != args.run_id:
            raise DeadlineError(f"{args.record} is the record of run {rec.get('run_id')!r}, not {args.run_id!r}")
        rec = {**rec, "journal_path": args.journal}
        dev.log(f"edgeslim deadline {args.run_id}: the run did not complete; restoring {rec.get('boot_layers')} "
                f"(services: {bool(rec.get('services'))}) from {args.journal}")  # fmt: skip
        out = restore(dev, rec)
        if out["restored"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.record)
        return 0 if out["restored"] else 1
    except Exception as exc:  # never raises: the service logs why and exits 1
        dev.log(f"edgeslim deadline {args.run_id}: {type(exc).__name__}: {exc}")
        return 1
