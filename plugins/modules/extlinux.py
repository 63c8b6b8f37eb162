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
  - Refuses, leaving the file untouched, a malformed file, a value containing C(#) or a newline, a managed entry past
    the 10-entry limit, and a result whose LINUX, INITRD, FDT or OVERLAYS files do not exist.
  - Writes atomically, with an optional backup.
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
    description: MENU LABEL of the managed entry.
    type: str
  clone_from:
    description: Entry the managed entry is cloned from. Default is the entry that boots now (DEFAULT, else the first).
    type: str
  label:
    description: Entry to edit when O(managed_label) is not set. Default is the entry that boots now.
    type: str
  kernel_args:
    description:
      - Arguments to set in APPEND; a null value sets a bare flag.
      - An existing value is replaced, never duplicated.
    type: dict
    default: {}
  kernel_args_absent:
    description: Argument names to remove from APPEND.
    type: list
    elements: str
    default: []
  fdt:
    description: FDT path to set (absolute). Empty string removes the FDT line.
    type: str
  overlays:
    description:
      - OVERLAYS to set (absolute .dtbo paths; L4TLauncher applies them only with an FDT line).
      - An empty list removes the line.
    type: list
    elements: str
  make_default:
    description: Point DEFAULT at the managed (or edited) entry.
    type: bool
    default: true
  default_label:
    description: With O(state=absent), the label DEFAULT returns to.
    type: str
  backup:
    description: Keep a timestamped copy of the file before changing it.
    type: bool
    default: true
  journal_path:
    description:
      - On-device journal (docs/journal.md). When set, the first change records the previous DEFAULT, the managed
        label and the file's checksum under O(journal_layer) before the file is written; V(absent) returns DEFAULT
        to the journaled label (unless O(default_label) is given) and clears the layer.
    type: path
  journal_layer:
    description: Journal layer this change belongs to (the boot layer that asked for it).
    type: str
    default: swiotlb
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
    managed_menu_label: "edgeslim: slimmed kernel command line"
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
backup_file:
  description: The backup, when one was made.
  returned: when changed and backup is true
  type: str
"""

import hashlib
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j


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
            "managed_menu_label": {"type": "str"},
            "clone_from": {"type": "str"},
            "label": {"type": "str"},
            "kernel_args": {"type": "dict", "default": {}},
            "kernel_args_absent": {"type": "list", "elements": "str", "default": []},
            "fdt": {"type": "str"},
            "overlays": {"type": "list", "elements": "str"},
            "make_default": {"type": "bool", "default": True},
            "default_label": {"type": "str"},
            "backup": {"type": "bool", "default": True},
            "journal_path": {"type": "path"},
            "journal_layer": {"type": "str", "default": "swiotlb"},
        },
        required_if=[("state", "absent", ["managed_label"])],
        mutually_exclusive=[("managed_label", "label")],
        supports_check_mode=True,
    )
    p = module.params
    try:
        with open(p["path"], encoding="utf-8", newline="") as handle:
            before = handle.read()
    except OSError as exc:
        module.fail_json(msg=f"cannot read {p['path']}: {exc.strerror}")
    result: dict = {"changed": False}
    try:
        conf = x.parse_extlinux(before, p["path"])
        result["previous_default"] = conf.default_label
        journaled = None
        if p["journal_path"]:
            journaled = j.get_layer(j.load_journal(p["journal_path"]), p["journal_layer"])
        # The entry that booted before edgeslim touched the file: what a revert must return to.
        result["stock_default"] = (journaled or {}).get("previous_default") or conf.default_entry().label
        if p["state"] == "absent":
            label = p["managed_label"]
            conf.remove_entry(label)
            target = p["default_label"] or (journaled or {}).get("previous_default") or conf.entries[0].label
            if conf.entry(target) is None:
                raise x.ExtlinuxError(f"default_label {target!r} is not an entry of {p['path']}")
            if conf.default_label == label or p["default_label"]:
                conf.set_global("DEFAULT", target)
        else:
            if p["managed_label"]:
                label = p["managed_label"]
                if conf.entry(label) is None:
                    source = p["clone_from"] or conf.default_entry().label
                    conf.clone_entry(source, label, p["managed_menu_label"])
                elif p["managed_menu_label"]:
                    conf.set_key(label, "MENU LABEL", p["managed_menu_label"])
            else:
                label = p["label"] or conf.default_entry().label
                conf.require(label)
            entry = conf.entry(label)
            append = conf.get(entry, "APPEND") or ""
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
                conf.set_key(label, "OVERLAYS", ",".join(p["overlays"]) or None)
            if conf.get(conf.entry(label), "OVERLAYS") and not conf.get(conf.entry(label), "FDT"):
                raise x.ExtlinuxError("OVERLAYS needs an FDT line: L4TLauncher applies overlays only to a loaded FDT")
            if p["make_default"]:
                conf.set_global("DEFAULT", label)
            missing = check_files(conf, label, p["root"])
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
            if p["journal_path"]:
                record_journal(module, p, before, result, journaled)
            if p["backup"]:
                result["backup_file"] = module.backup_local(p["path"])
            fd, tmp = tempfile.mkstemp(prefix=".extlinux.", dir=os.path.dirname(p["path"]))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(after)
                handle.flush()
                os.fsync(handle.fileno())
            module.atomic_move(tmp, p["path"])
    elif p["state"] == "absent" and p["journal_path"] and journaled is not None and not module.check_mode:
        record_journal(module, p, before, result, journaled)
        result["changed"] = True
    module.exit_json(**result)


def record_journal(module: AnsibleModule, p: dict, before: str, result: dict, journaled: dict | None) -> None:
    """Journal before writing: the first change keeps the stock state; a removal clears the layer."""

    def update(old):
        if p["state"] == "absent":
            return None
        if old is not None:
            return old  # the stock state was recorded by the first change; later edits keep it
        return {
            "created": j.utc_now(),
            "path": p["path"],
            "managed_label": p["managed_label"] or result.get("entry"),
            "previous_default": result.get("previous_default"),
            "sha256_before": hashlib.sha256(before.encode()).hexdigest(),
        }

    try:
        j.update_layer(p["journal_path"], p["journal_layer"], update, replace=module.atomic_move)
    except j.JournalError as exc:
        module.fail_json(msg=f"journal: {exc}", **result)


if __name__ == "__main__":
    main()
