#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: extlinux
short_description: Edit a Jetson's extlinux.conf the way NVIDIA's L4TLauncher reads it
description:
  - Manages kernel arguments, FDT and OVERLAYS of one boot entry of C(/boot/extlinux/extlinux.conf), and a managed
    entry cloned from the stock one that is made DEFAULT while the stock entry stays as the fallback.
  - Follows L4TLauncher's grammar (C(#) anywhere starts a comment, at most 10 entries, DEFAULT else the first entry)
    and keeps every line it does not change byte-identical.
  - Refuses, leaving the file untouched, a malformed, binary or non-UTF-8 file, a value containing C(#) or a newline,
    a managed entry past the 10-entry limit, and a result whose LINUX, INITRD, FDT or OVERLAYS files do not exist.
  - Refuses a kernel argument that is not exactly one argument (a name other than letters, digits, C(_), C(-), C(.);
    a value with whitespace, quotes, control or line-separator characters), a change of C(root=), C(init=),
    C(rdinit=) or C(nfsroot=) unless O(allow_root_change), and a C(swiotlb=) other than 1 to 524288 slots (1 GiB).
  - Refuses an O(fdt) or O(overlays) path that is not absolute or whose real path (after C(..) and symlinks) is outside
    C(/boot) under O(root).
  - Warns when DEFAULT names no entry (L4TLauncher then boots the first one); the rollback restores that DEFAULT line
    as it was.
  - Writes atomically (temporary file, fsync, rename, fsync of the directory), with a bounded number of backups; a
    full C(/boot) (ENOSPC, EFBIG) fails clearly and leaves no temporary file or partial backup.
version_added: 0.1.0
author: edgeslim maintainers (@edgeslim)
options:
  path:
    description: The extlinux.conf file.
    type: path
    default: /boot/extlinux/extlinux.conf
  root:
    description: Prefix under which the absolute paths named in the file are checked (an offline rootfs, tests).
    type: path
    default: /
  state:
    description:
      - V(present) creates or updates the managed entry (or edits O(label) when O(managed_label) is not set).
      - V(absent) removes the managed entry and points DEFAULT at O(default_label) (or the first remaining entry).
    type: str
    choices: [present, absent]
    default: present
  managed_label:
    description: Label of the managed entry. When set, it is cloned from O(clone_from) if missing.
    type: str
  managed_menu_label:
    description:
      - MENU LABEL of the managed entry, set on every V(present) call.
      - The entry is shared (the SWIOTLB and carveouts layers boot through ONE entry), so its identity must not
        depend on which layer wrote last; callers sharing an entry leave this at its default, or all pass the same.
    type: str
    default: "edgeslim: slimmed boot entry"
  clone_from:
    description: Entry the managed entry is cloned from. Default is the entry that boots now (DEFAULT, else the first).
    type: str
  label:
    description: Entry to edit when O(managed_label) is not set. Default is the entry that boots now.
    type: str
  kernel_args:
    description:
      - Arguments to set in APPEND; a null value sets a bare flag.
      - An existing value is replaced, never duplicated. A new argument goes before a C(--) (after it, init gets it).
      - Each key and value must form exactly one kernel argument; C(swiotlb) must be C(<slots>[,<nareas>][,force])
        with 1 to 524288 slots.
    type: dict
    default: {}
  kernel_args_absent:
    description: Argument names to remove from APPEND.
    type: list
    elements: str
    default: []
  fdt:
    description: FDT path to set (absolute, inside C(/boot) after resolving symlinks). Empty string removes the FDT
      line.
    type: str
  overlays:
    description:
      - OVERLAYS to set (absolute .dtbo paths inside C(/boot) after resolving symlinks; L4TLauncher applies them only
        with an FDT line).
      - An empty list removes the line (unless O(overlays_keep_existing)).
    type: list
    elements: str
  overlays_keep_existing:
    description:
      - With O(overlays), keep every overlay the entry already has (in order, e.g. a camera overlay jetson-io
        added) and append O(overlays) last, without duplicates; a list that already ends with them is unchanged.
      - When the entry has no OVERLAYS line but the journal recorded the OVERLAYS this layer's first change found
        (an earlier run removed the line), those are the entry's overlays.
    type: bool
    default: false
  make_default:
    description: Point DEFAULT at the managed (or edited) entry.
    type: bool
    default: true
  default_label:
    description: With O(state=absent), the label DEFAULT returns to.
    type: str
  backup:
    description:
      - Keep a timestamped copy of the file before changing it, next to it
        (C(extlinux.conf.edgeslim-<UTC time>.bak)).
    type: bool
    default: true
  backup_keep:
    description:
      - How many of those backups to keep; older ones are removed after a successful write (C(/boot) is small, and a
        backup is made on every change). Other files (e.g. NVIDIA's own backups) are never touched.
    type: int
    default: 3
  allow_root_change:
    description:
      - Allow O(kernel_args) or O(kernel_args_absent) to set or remove C(root), C(init), C(rdinit) or C(nfsroot),
        which decide which system boots. Refused by default.
    type: bool
    default: false
  journal_path:
    description:
      - On-device journal (docs/journal.md). When set, the first change records the previous DEFAULT, the managed
        label and the file's checksum under O(journal_layer) before the file is written; V(absent) returns DEFAULT
        to the journaled label (unless O(default_label) is given) and clears the layer.
      - Layers may share one managed entry (the SWIOTLB and carveouts layers do). The journal then also records, per
        layer, the values the layer's first change found for what it sets (FDT, OVERLAYS, kernel arguments), and
        the stock DEFAULT is taken from the layer that created the entry. V(absent) while another journal layer
        still uses the entry puts back only this layer's values and keeps the entry (and DEFAULT).
    type: path
  journal_layer:
    description: Journal layer this change belongs to (the boot layer that asked for it).
    type: str
    default: swiotlb
  check_mode_assume_files:
    description:
      - Absolute paths treated as existing B(in check mode only) - files an earlier task of the same play installs,
        which check mode did not write (e.g. the carveouts overlay). Outside check mode every file must exist.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    description: Computes the change and the diff without writing.
    support: full
  diff_mode:
    description: Shows the file before and after.
    support: full
  platform:
    description: Jetson (L4T) root filesystems.
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Managed entry with a 4 MiB SWIOTLB pool, stock entry kept as fallback
  edgeslim.jetson.extlinux:
    managed_label: edgeslim
    kernel_args:
      swiotlb: "2048"

- name: Roll back to the stock entry
  edgeslim.jetson.extlinux:
    state: absent
    managed_label: edgeslim
    default_label: primary
"""

RETURN = r"""
stock_default:
  description: The entry that booted before edgeslim changed the file (from the journal, else the current one).
  returned: always
  type: str
  sample: primary
previous_default:
  description: DEFAULT before the change (what a rollback restores).
  returned: always
  type: str
  sample: primary
entry:
  description: The entry that was edited (or removed).
  returned: always
  type: str
append_before:
  description: APPEND of that entry before.
  returned: when state is present
  type: str
append_after:
  description: APPEND of that entry after.
  returned: when state is present
  type: str
summary:
  description: The resulting file as L4TLauncher reads it (default_label, timeout, entries, boot_label).
  returned: always
  type: dict
owned_before:
  description: The managed entry's values, before this change, of what this call sets (journaled on first change).
  returned: when state is present
  type: dict
  sample: {fdt: /boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb, overlays: null}
overlays_existing:
  description:
    - The overlays the (managed) entry has before this change, in order (see O(overlays_keep_existing) for an entry
      whose line an earlier run removed). A caller merging its own DTB applies these first.
  returned: when state is present
  type: list
  elements: str
  sample: [/boot/tegra234-p3767-camera-p3768-imx219-dual.dtbo]
shared_with:
  description: Other journal layers still using the managed entry (state absent then restores only this layer).
  returned: when state is absent and the entry is shared
  type: list
  elements: str
backup_file:
  description: The backup, when one was made.
  returned: when changed and backup is true
  type: str
"""

import contextlib
import datetime
import errno
import hashlib
import os
import re
import stat
import tempfile
from typing import Callable

from ansible.module_utils.basic import AnsibleModule
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


def write_conf(module: AnsibleModule, p: dict, before: str, after: str, journal: Callable[[], None]) -> str | None:
    """Backup (when asked), new file, journal, atomic rename, directory fsync, backup pruning. Until the rename
    nothing is visible: on any failure the temporary file and the new backup are removed and the file is as it was.
    Returns the backup's path."""
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
            module.fail_json(msg=f"cannot write {path}: {full.get(exc.errno, exc.strerror)} "
                             f"({errno.errorcode.get(exc.errno, exc.errno)}, in {directory}); nothing was changed and "
                             "no temporary file or backup is left"
                             + (" -- free space in /boot and re-run" if exc.errno in full else ""))  # fmt: skip
        journal()
        module.atomic_move(tmp, path)
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
        module.warn(f"{path} was written, but syncing {directory} or removing old backups failed: {exc}")
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


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/boot/extlinux/extlinux.conf"},
            "root": {"type": "path", "default": "/"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "managed_label": {"type": "str"},
            "managed_menu_label": {"type": "str", "default": MANAGED_MENU_LABEL},
            "clone_from": {"type": "str"},
            "label": {"type": "str"},
            "kernel_args": {"type": "dict", "default": {}},
            "kernel_args_absent": {"type": "list", "elements": "str", "default": []},
            "fdt": {"type": "str"},
            "overlays": {"type": "list", "elements": "str"},
            "overlays_keep_existing": {"type": "bool", "default": False},
            "make_default": {"type": "bool", "default": True},
            "default_label": {"type": "str"},
            "backup": {"type": "bool", "default": True},
            "backup_keep": {"type": "int", "default": 3},
            "allow_root_change": {"type": "bool", "default": False},
            "journal_path": {"type": "path"},
            "journal_layer": {"type": "str", "default": "swiotlb"},
            "check_mode_assume_files": {"type": "list", "elements": "str", "default": []},
        },
        required_if=[("state", "absent", ["managed_label"])],
        mutually_exclusive=[("managed_label", "label")],
        supports_check_mode=True,
    )
    p = module.params
    if p["backup_keep"] < 1:
        module.fail_json(msg=f"backup_keep must be at least 1, got {p['backup_keep']} (use backup: false for none)")
    result: dict = {"changed": False}
    try:
        for key, value in p["kernel_args"].items():
            x.check_kernel_arg(key, None if value is None else str(value), p["allow_root_change"])
        for key in p["kernel_args_absent"]:
            x.check_kernel_arg(key, None, p["allow_root_change"], removing=True)
        if p["fdt"]:
            confine_to_boot(p["fdt"], p["root"], "fdt")
        for overlay in p["overlays"] or []:
            confine_to_boot(overlay, p["root"], "overlay")
        before = read_conf(p["path"])
    except OSError as exc:
        module.fail_json(msg=f"cannot read {p['path']}: {exc.strerror}")
    except x.ExtlinuxError as exc:
        module.fail_json(msg=str(exc))
    try:
        conf = x.parse_extlinux(before, p["path"])
        result["previous_default"] = conf.default_label
        if conf.default_label is not None and conf.entry(conf.default_label) is None:
            module.warn(f"{p['path']}: DEFAULT {conf.default_label!r} names no entry L4TLauncher reads; it boots the "
                        f"first entry, {conf.entries[0].label!r}")  # fmt: skip
        journaled, sharers = None, []
        if p["journal_path"]:
            doc = j.load_journal(p["journal_path"])
            journaled = j.get_layer(doc, p["journal_layer"])
            sharers = sharing_layers(doc, p)
        # The entry that booted before edgeslim touched the file: what a revert must return to.
        result["stock_default"] = (journaled or {}).get("previous_default") or stock_label(conf, p, sharers)
        if p["state"] == "absent":
            label = p["managed_label"]
            if sharers and conf.entry(label) is not None:
                # Another layer still boots through this entry: put back only what this layer set.
                restore_owned(conf, label, (journaled or {}).get("owned") or {})
                if p["default_label"]:
                    conf.require(p["default_label"])
                    conf.set_global("DEFAULT", p["default_label"])
                result["shared_with"] = sharers
            else:
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
        else:
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
            missing = check_files(conf, label, p["root"])
            if module.check_mode:
                missing = [m for m in missing if m not in p["check_mode_assume_files"]]
            if missing:
                raise x.ExtlinuxError(f"entry {label!r} would name files that do not exist: {', '.join(missing)}")
        result["entry"] = label
    except (x.ExtlinuxError, j.JournalError) as exc:
        module.fail_json(msg=str(exc), **result)

    after = conf.render()
    result["summary"] = conf.summary()
    if after != before:
        result["changed"] = True
        if module._diff:
            result["diff"] = {"before": before, "after": after, "before_header": p["path"], "after_header": p["path"]}
        if not module.check_mode:

            def journal() -> None:
                if p["journal_path"]:
                    record_journal(module, p, before, result, journaled)

            backup_file = write_conf(module, p, before, after, journal)
            if backup_file:
                result["backup_file"] = backup_file
    elif p["state"] == "absent" and p["journal_path"] and journaled is not None and not module.check_mode:
        record_journal(module, p, before, result, journaled)
        result["changed"] = True
    module.exit_json(**result)


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


def record_journal(module: AnsibleModule, p: dict, before: str, result: dict, journaled: dict | None) -> None:
    """Journal before writing: the first change keeps the stock state; a removal clears the layer."""

    def update(old):
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

    try:
        j.update_layer(p["journal_path"], p["journal_layer"], update, replace=module.atomic_move)
    except j.JournalError as exc:
        module.fail_json(msg=f"journal: {exc}", **result)


if __name__ == "__main__":
    main()
