# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Edits of extlinux.conf on the device with their journal records, shared by edgeslim.jetson.extlinux (one layer
per call) and edgeslim.jetson.engine (every boot layer in one edit of the managed entry).

``p`` is a dict of edgeslim.jetson.extlinux's options (path, root, state, managed_label, managed_menu_label,
clone_from, label, kernel_args, kernel_args_absent, fdt, overlays, overlays_keep_existing, make_default, backup,
backup_keep, journal_path, journal_layer). The journal record of a layer (``journal_update``) keeps the stock state
of the first change: the entry that booted before, the DEFAULT line as found, and what the layer set in the managed
entry (``owned``), which a rollback of that layer alone puts back.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import os
import re
import stat
import tempfile
from typing import Callable

from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j

BACKUP_PREFIX = ".edgeslim-"
# One identity for the managed entry whichever layers share it and whichever wrote last: a label naming the last
# writer made every re-run of two layers rewrite the file twice (and re-arm, and reboot).
MANAGED_MENU_LABEL = "edgeslim: slimmed boot entry"
BACKUP_SUFFIX = ".bak"


def read_conf(path: str) -> str:
    """The file as text, refusing what is not an extlinux.conf L4TLauncher could read (binary, non-UTF-8)."""
    with open(path, "rb") as handle:
        data = handle.read()
    nul = data.find(b"\0")
    if nul >= 0:
        raise x.ExtlinuxError(f"{path} contains a NUL byte (offset {nul}): not a text extlinux.conf; refusing to "
                              "edit it")  # fmt: skip
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise x.ExtlinuxError(f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                              "refusing to edit a binary or differently encoded extlinux.conf") from None  # fmt: skip


def confine_to_boot(path: str, root: str, what: str) -> None:
    """``path`` (as named in the file) must be absolute and its real path, under ``root``, inside /boot: the boot
    chain reads these files from the boot partition's /boot, and a playbook must not point the kernel at another
    file through ``..`` or a symlink."""
    if not path.startswith("/"):
        raise x.ExtlinuxError(f"{what} {path!r} refused: it must be an absolute path inside /boot")
    real_root = os.path.realpath(root)
    boot = os.path.realpath(os.path.join(real_root, "boot"))
    real = os.path.realpath(os.path.join(real_root, path.lstrip("/")))
    if real != boot and not real.startswith(boot.rstrip(os.sep) + os.sep):
        shown = "/" + os.path.relpath(real, real_root) if real.startswith(real_root) else real
        raise x.ExtlinuxError(f"{what} {path!r} refused: it resolves to {shown}, outside /boot")


def write_bytes(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def durable_temp(directory: str, prefix: str, data: bytes, mode: int) -> str:
    """A fsynced temporary file holding ``data`` in ``directory``; removed again when writing it fails."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        try:
            write_bytes(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_conf(
    p: dict,
    before: str,
    after: str,
    journal: Callable[[], None],
    replace: Callable[[str, str], None],
    warn: Callable[[str], None],
) -> str | None:
    """Backup (when asked), new file, journal, atomic rename, directory fsync, backup pruning. Until the rename
    nothing is visible: on any failure the temporary file and the new backup are removed and the file is as it was.
    Returns the backup's path; raises ExtlinuxError (nothing changed) when the new file cannot be written.
    ``replace(src, dest)`` is the atomic rename (AnsibleModule.atomic_move), ``warn`` takes a warning."""
    path = p["path"]
    directory = os.path.dirname(path) or "."
    mode = stat.S_IMODE(os.stat(path).st_mode)
    created: list[str] = []
    backup_file = None
    try:
        try:
            if p["backup"]:
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
                backup_file = f"{path}{BACKUP_PREFIX}{stamp}{BACKUP_SUFFIX}"
                tmp_backup = durable_temp(directory, ".extlinux.bak.", before.encode("utf-8"), mode)
                created.append(tmp_backup)
                os.rename(tmp_backup, backup_file)
                created[-1] = backup_file
            tmp = durable_temp(directory, ".extlinux.", after.encode("utf-8"), mode)
            created.append(tmp)
        except OSError as exc:
            full = {errno.ENOSPC: "the file system is full", errno.EFBIG: "the file is too large for it",
                    errno.EDQUOT: "the disk quota is exhausted"}  # fmt: skip
            hint = " -- free space in /boot and re-run" if exc.errno in full else ""
            raise x.ExtlinuxError(f"cannot write {path}: {full.get(exc.errno, exc.strerror)} "
                                  f"({errno.errorcode.get(exc.errno, exc.errno)}, in {directory}); nothing was "
                                  f"changed and no temporary file or backup is left{hint}") from None  # fmt: skip
        journal()
        replace(tmp, path)
        created.clear()  # the change is made: the backup stays
    finally:
        for leftover in created:
            with contextlib.suppress(OSError):
                os.unlink(leftover)
    # The rename is durable only once the directory entry is on disk (a power cut right after the play must not
    # bring back the old file, or neither).
    try:
        fsync_dir(directory)
        if p["backup"]:
            prune_backups(path, p["backup_keep"])
    except OSError as exc:  # the new file is in place; say what could not be finished
        warn(f"{path} was written, but syncing {directory} or removing old backups failed: {exc}")
    return backup_file


def prune_backups(path: str, keep: int) -> None:
    directory, name = os.path.split(path)
    pattern = re.compile(re.escape(name + BACKUP_PREFIX) + r"\d{8}T\d{12}Z" + re.escape(BACKUP_SUFFIX) + r"\Z")
    backups = sorted(f for f in os.listdir(directory or ".") if pattern.match(f))
    for old in backups[: max(len(backups) - keep, 0)]:
        os.unlink(os.path.join(directory, old))


def check_files(conf: x.ExtlinuxConfig, label: str, root: str) -> list[str]:
    entry = conf.entry(label)
    paths = [conf.get(entry, k) for k in ("LINUX", "INITRD", "FDT")]
    paths += x.split_overlays(conf.get(entry, "OVERLAYS"))
    missing = []
    for p in paths:
        if p and not os.path.exists(os.path.join(root, p.lstrip("/"))):
            missing.append(p)
    return missing


def sharing_layers(doc: dict, p: dict) -> list[str]:
    """Other journal layers whose managed entry is ours (same file, same label). Read-only: each layer still writes
    only its own key; this is how one managed entry serves several boot layers."""
    label = p["managed_label"]
    if not label:
        return []
    return sorted(
        name
        for name, rec in doc["layers"].items()
        if name != p["journal_layer"] and rec.get("managed_label") == label and rec.get("path") == p["path"]
    )


def stock_label(conf: x.ExtlinuxConfig, p: dict, sharers: list[str]) -> str:
    """The entry that booted before edgeslim: the current one, unless that is already our managed entry (another
    layer made it DEFAULT); then the stock DEFAULT that layer journaled, else the first entry that is not ours."""
    current = conf.default_entry().label
    if not p["managed_label"] or current != p["managed_label"]:
        return current
    if sharers and p["journal_path"]:
        doc = j.load_journal(p["journal_path"])
        for name in sharers:
            label = (doc["layers"][name] or {}).get("previous_default")
            if label and label != p["managed_label"] and conf.entry(label) is not None:
                return label
    others = [e.label for e in conf.entries[: x.MAX_ENTRIES] if e.label != p["managed_label"]]
    if not others:
        raise x.ExtlinuxError(f"{p['path']}: only the managed entry {current!r} exists; no stock entry to fall back to")
    return others[0]


def existing_overlays(conf: x.ExtlinuxConfig, entry: x.Entry, journaled: dict | None) -> list[str]:
    """The entry's overlays; when it has no OVERLAYS line, the ones this layer's first change found (journaled), so a
    run that removed the line (merged DTB) does not lose another tool's overlays for the next run."""
    value = conf.get(entry, "OVERLAYS")
    if value is None:
        value = ((journaled or {}).get("owned") or {}).get("overlays")
    return x.split_overlays(value)


def owned_values(conf: x.ExtlinuxConfig, entry: x.Entry, p: dict) -> dict:
    """What this call sets, as the entry has it now (FDT/OVERLAYS text or None; kernel args: value, None for a flag,
    False when absent)."""
    owned: dict = {}
    if p["fdt"] is not None:
        owned["fdt"] = conf.get(entry, "FDT")
    if p["overlays"] is not None:
        owned["overlays"] = conf.get(entry, "OVERLAYS")
    append = conf.get(entry, "APPEND") or ""
    keys = [*p["kernel_args"], *p["kernel_args_absent"]]
    if keys:
        owned["kernel_args"] = {k: x.get_cmdline_arg(append, k) for k in keys}
    return owned


def merge_owned(old: dict, new: dict) -> dict:
    """First record wins per item: a later run adds what it newly sets but never overwrites a recorded value."""
    out = {**new, **{k: v for k, v in old.items() if k != "kernel_args"}}
    args = {**new.get("kernel_args", {}), **old.get("kernel_args", {})}
    if args:
        out["kernel_args"] = args
    return out


def restore_owned(conf: x.ExtlinuxConfig, label: str, owned: dict) -> None:
    if "overlays" in owned:
        conf.set_key(label, "OVERLAYS", owned["overlays"])
    if "fdt" in owned:
        conf.set_key(label, "FDT", owned["fdt"])
    append = conf.get(conf.require(label), "APPEND") or ""
    for key, value in (owned.get("kernel_args") or {}).items():
        append = x.remove_cmdline_arg(append, key) if value is False else x.set_cmdline_arg(append, key, value)
    conf.set_key(label, "APPEND", append)
    entry = conf.require(label)
    if conf.get(entry, "OVERLAYS") and not conf.get(entry, "FDT"):
        raise x.ExtlinuxError("OVERLAYS needs an FDT line: L4TLauncher applies overlays only to a loaded FDT")


def default_line(p: dict, result: dict) -> dict:
    """The DEFAULT value as found (None: no line), when it is the stock one -- not our managed entry made DEFAULT by
    another layer -- so the rollback can restore it exactly, even when it names no entry."""
    found = result.get("previous_default")
    if p["managed_label"] and found == p["managed_label"]:
        return {}
    return {"default_line": found}


def restore_default(conf: x.ExtlinuxConfig, line: str | None) -> None:
    """DEFAULT back to the journaled value: None = the file had no DEFAULT line."""
    if line is None:
        conf.remove_global("DEFAULT")
    else:
        x.check_value(line)
        conf.set_global("DEFAULT", line)


def remove_managed(conf: x.ExtlinuxConfig, p: dict, journaled: dict | None, sharers: list[str], result: dict) -> str:
    """The V(absent) edit of one layer on ``conf`` (in memory), as edgeslim.jetson.extlinux does it and the engine's
    deadline restore (deadline.py): while another journal layer (``sharers``) still boots through the managed entry,
    only this layer's ``owned`` values are put back; otherwise the entry goes and DEFAULT returns to the line this
    layer's first change found (``default_line``), else ``p["default_label"]`` or the journaled previous default.
    Returns the managed label."""
    label = p["managed_label"]
    if sharers and conf.entry(label) is not None:
        # Another layer still boots through this entry: put back only what this layer set.
        restore_owned(conf, label, (journaled or {}).get("owned") or {})
        if p["default_label"]:
            conf.require(p["default_label"])
            conf.set_global("DEFAULT", p["default_label"])
        result["shared_with"] = sharers
        return label
    ours = conf.default_label == label
    conf.remove_entry(label)
    if ours and not p["default_label"] and "default_line" in (journaled or {}):
        # The DEFAULT line exactly as this layer found it (absent, or naming a missing label).
        restore_default(conf, journaled["default_line"])
    else:
        target = p["default_label"] or (journaled or {}).get("previous_default") or conf.entries[0].label
        if conf.entry(target) is None:
            raise x.ExtlinuxError(f"default_label {target!r} is not an entry of {p['path']}")
        if ours or p["default_label"]:
            conf.set_global("DEFAULT", target)
    return label


def journal_update(p: dict, before: str, result: dict) -> Callable[[dict | None], dict | None]:
    """The journal update of one layer's edit (journal.update_layer): the first change keeps the stock state, later
    edits only add newly set items; a removal clears the layer."""

    def update(old: dict | None) -> dict | None:
        if p["state"] == "absent":
            return None
        owned = result.get("owned_before") or {}
        if old is not None:
            # The stock state was recorded by the first change; later edits keep it and only add newly set items.
            merged = merge_owned(old.get("owned") or {}, owned)
            return {**old, "owned": merged} if merged != (old.get("owned") or {}) and merged else old
        return {
            "created": j.utc_now(),
            "path": p["path"],
            "managed_label": p["managed_label"] or result.get("entry"),
            "previous_default": result.get("stock_default") if p["managed_label"] else result.get("previous_default"),
            "sha256_before": hashlib.sha256(before.encode()).hexdigest(),
            "owned": owned,
            **default_line(p, result),
        }

    return update


def edit_present(
    conf: x.ExtlinuxConfig, p: dict, journaled: dict | None, sharers: list[str], result: dict, assume_files: list[str]
) -> str:
    """The V(present) edit of one layer on ``conf`` (in memory): the managed entry (cloned from the stock one when
    missing) or ``p["label"]``, its kernel arguments, FDT and OVERLAYS, DEFAULT when ``p["make_default"]``. Fills
    ``result`` (owned_before, overlays_existing, append_before/after) and returns the edited entry's label; raises
    ExtlinuxError for an edit L4TLauncher could not boot (a named file missing, unless in ``assume_files``)."""
    if p["managed_label"]:
        label = p["managed_label"]
        if conf.entry(label) is None:
            source = p["clone_from"] or stock_label(conf, p, sharers)
            conf.clone_entry(source, label, p["managed_menu_label"])
        elif p["managed_menu_label"]:
            conf.set_key(label, "MENU LABEL", p["managed_menu_label"])
    else:
        label = p["label"] or conf.default_entry().label
        conf.require(label)
    entry = conf.entry(label)
    append = conf.get(entry, "APPEND") or ""
    result["owned_before"] = owned_values(conf, entry, p)
    existing = existing_overlays(conf, entry, journaled)
    result["overlays_existing"] = existing
    result["append_before"] = append
    for key, value in p["kernel_args"].items():
        append = x.set_cmdline_arg(append, key, None if value is None else str(value))
    for key in p["kernel_args_absent"]:
        append = x.remove_cmdline_arg(append, key)
    conf.set_key(label, "APPEND", append)
    result["append_after"] = append
    if p["fdt"] is not None:
        conf.set_key(label, "FDT", p["fdt"] or None)
    if p["overlays"] is not None:
        wanted = x.merge_overlays(existing, p["overlays"]) if p["overlays_keep_existing"] else p["overlays"]
        conf.set_key(label, "OVERLAYS", ",".join(wanted) or None)
    if conf.get(conf.entry(label), "OVERLAYS") and not conf.get(conf.entry(label), "FDT"):
        raise x.ExtlinuxError("OVERLAYS needs an FDT line: L4TLauncher applies overlays only to a loaded FDT")
    if p["make_default"]:
        conf.set_global("DEFAULT", label)
    missing = [m for m in check_files(conf, label, p["root"]) if m not in assume_files]
    if missing:
        raise x.ExtlinuxError(f"entry {label!r} would name files that do not exist: {', '.join(missing)}")
    return label
