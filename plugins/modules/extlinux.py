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

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j
from ansible_collections.edgeslim.jetson.plugins.module_utils.extlinux_edit import (
    MANAGED_MENU_LABEL,
    confine_to_boot,
    edit_present,
    journal_update,
    read_conf,
    remove_managed,
    sharing_layers,
    stock_label,
    write_conf,
)


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
            label = remove_managed(conf, p, journaled, sharers, result)
        else:
            assume = p["check_mode_assume_files"] if module.check_mode else []
            label = edit_present(conf, p, journaled, sharers, result, assume)
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
                # An edit is journaled before the file changes; a removal's record is cleared only after (below),
                # so a power cut in between leaves the record a re-run needs to finish the removal.
                if p["journal_path"] and p["state"] == "present":
                    record_journal(module, p, before, result, journaled)

            try:
                backup_file = write_conf(p, before, after, journal, module.atomic_move, module.warn)
            except x.ExtlinuxError as exc:
                module.fail_json(msg=str(exc))
            if backup_file:
                result["backup_file"] = backup_file
            if p["state"] == "absent" and p["journal_path"] and journaled is not None:
                record_journal(module, p, before, result, journaled)
    elif p["state"] == "absent" and p["journal_path"] and journaled is not None and not module.check_mode:
        record_journal(module, p, before, result, journaled)
        result["changed"] = True
    module.exit_json(**result)


def record_journal(module: AnsibleModule, p: dict, before: str, result: dict, journaled: dict | None) -> None:
    """Journal before writing: the first change keeps the stock state; a removal clears the layer."""
    try:
        j.update_layer(
            p["journal_path"], p["journal_layer"], journal_update(p, before, result), replace=module.atomic_move
        )
    except j.JournalError as exc:
        module.fail_json(msg=f"journal: {exc}", **result)


if __name__ == "__main__":
    main()
