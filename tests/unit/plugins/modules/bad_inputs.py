"""The bad inputs edgeslim refuses itself, whatever a role, a profile or a playbook passes: one row each.

This list is the single source of the table in docs/reliability.md ("Bad inputs, refused before any change") and
of the test that feeds every row (test_bad_inputs.py): the test asserts each row is refused with its message before
any change, and that the page shows exactly this table. After editing a row, rewrite the page's table with
``.venv/bin/python tests/unit/plugins/modules/bad_inputs.py``.

A row: ``input`` and ``where`` (Markdown for the page), ``message`` (fragments the refusal contains in this order;
the page joins them with " ... "), ``kind`` (how the test feeds it), ``args`` and ``setup`` (what it feeds).
Paths in messages are the device's: the test strips its temporary root from the module's message.
"""

from __future__ import annotations

import sys
from pathlib import Path

STOCK_DTB = "/boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb"
PAGE = Path(__file__).resolve().parents[4] / "docs" / "reliability.md"
BEGIN = "<!-- bad-inputs table: generated from tests/unit/plugins/modules/bad_inputs.py, do not edit -->"
END = "<!-- end of the bad-inputs table -->"
REFUSE = "refusing to change anything: "
# What pre-flight passes layer_refusals for an Orin Nano on L4T 36.4.7 whose inputs are all accepted; a row changes
# one of them ("layers", "l4t" and "swiotlb_use" are the call's other arguments).
PREFLIGHT = {"swiotlb_size_mib": 4, "swiotlb_min_mib": 4, "swiotlb_reboot_ok": True, "edgeslim_reboot_ok": None,
             "swiotlb_force_below_usage": False, "swiotlb_debugfs_path": "/sys/kernel/debug/swiotlb",
             "carveouts_recipes": ["headless"], "carveouts_reboot_ok": True,
             "carveouts_fdt_method": "auto"}  # fmt: skip
ORIN_NANO = {"soc": "t234", "module": {"module": "p3767-0005"}, "l4t": {"major": 36, "minor": 4, "version": "36.4.7"}}


def row(given: str, where: str, message: list, kind: str, args: dict, setup: dict | None = None) -> dict:
    return {"input": given, "where": where, "message": message, "kind": kind, "args": args, "setup": setup or {}}


def split_value(arg: str, value: str, char: str, code: str) -> list:
    return [
        f"kernel argument {arg}={value!r} refused: the value contains {char!r} ({code}); whitespace, quotes and "
        "control or line-separator characters would split it into several arguments or cut the APPEND line"
    ]


ROWS = [
    # ---- kernel arguments (edgeslim.jetson.extlinux, module_utils/extlinux.py) ----
    row(
        '`kernel_args: {swiotlb: "2048 init=/bin/sh"}` (one value that would be two arguments)',
        "extlinux, `check_cmdline_arg`",
        split_value("swiotlb", "2048 init=/bin/sh", " ", "U+0020"),
        "extlinux",
        {"kernel_args": {"swiotlb": "2048 init=/bin/sh"}},
    ),
    row(
        "a value with a tab",
        "extlinux, `check_cmdline_arg`",
        split_value("quiet_mode", "1\tx", "\t", "U+0009"),
        "extlinux",
        {"kernel_args": {"quiet_mode": "1\tx"}},
    ),
    row(
        "a value with a control character (ESC)",
        "extlinux, `check_cmdline_arg`",
        split_value("quiet_mode", "1\x1bx", "\x1b", "U+001B"),
        "extlinux",
        {"kernel_args": {"quiet_mode": "1\x1bx"}},
    ),
    row(
        "a value with U+2028 (line separator)",
        "extlinux, `check_cmdline_arg`",
        ["the value contains", "(U+2028)"],
        "extlinux",
        {"kernel_args": {"quiet_mode": "1\u2028init=/bin/sh"}},
    ),
    row(
        "a value with U+0085 (NEL)",
        "extlinux, `check_cmdline_arg`",
        ["the value contains", "(U+0085)"],
        "extlinux",
        {"kernel_args": {"quiet_mode": "1\u0085init=/bin/sh"}},
    ),
    row(
        "a value with a double quote (`console: 'tty0\" init=/bin/sh \"'`: the kernel keeps quoted spaces)",
        "extlinux, `check_cmdline_arg`",
        ["the value contains '\"' (U+0022)"],
        "extlinux",
        {"kernel_args": {"console": 'tty0" init=/bin/sh "'}},
    ),
    row(
        "a name with `=` (`a=b`)",
        "extlinux, `check_cmdline_arg`",
        ["kernel argument name 'a=b' refused: a name is letters, digits, '_', '-' and '.' (no '=', no spaces)"],
        "extlinux",
        {"kernel_args": {"a=b": "1"}},
    ),
    row(
        'a name with a space (`"init=/bin/sh swiotlb"`)',
        "extlinux, `check_cmdline_arg`",
        ["kernel argument name 'init=/bin/sh swiotlb' refused"],
        "extlinux",
        {"kernel_args": {"init=/bin/sh swiotlb": "2048"}},
    ),
    row(
        "`kernel_args: {root: /dev/sda1}`",
        "extlinux, `check_kernel_arg` (unless `allow_root_change: true`)",
        ["refusing to set root= in APPEND: it decides which system boots; set allow_root_change to change it"],
        "extlinux",
        {"kernel_args": {"root": "/dev/sda1"}},
    ),
    row(
        "`kernel_args: {init: /bin/sh}`",
        "extlinux, `check_kernel_arg`",
        ["refusing to set init= in APPEND"],
        "extlinux",
        {"kernel_args": {"init": "/bin/sh"}},
    ),
    row(
        "`kernel_args_absent: [root]`",
        "extlinux, `check_kernel_arg`",
        ["refusing to remove root= from APPEND"],
        "extlinux",
        {"kernel_args_absent": ["root"]},
    ),
    # ---- SWIOTLB ----
    row(
        "`kernel_args: {swiotlb: 51200000000}`",
        "extlinux, `check_swiotlb`",
        [
            "swiotlb=51200000000 refused: 51200000000 slots is 100000000 MiB of bounce buffer; at most 524288 slots "
            "(1024 MiB), allocated at boot from low memory"
        ],
        "extlinux",
        {"kernel_args": {"swiotlb": "51200000000"}},
    ),
    row(
        "`kernel_args: {swiotlb: 0}`",
        "extlinux, `check_swiotlb`",
        ["swiotlb=0 refused: expected <slots>[,<nareas>][,force] with a decimal slot count > 0"],
        "extlinux",
        {"kernel_args": {"swiotlb": "0"}},
    ),
    row(
        "`kernel_args: {swiotlb: 0x800}` (read as hex by the kernel)",
        "extlinux, `check_swiotlb`",
        ["swiotlb=0x800 refused", "a leading 0 or 0x is read as octal or hex"],
        "extlinux",
        {"kernel_args": {"swiotlb": "0x800"}},
    ),
    row(
        '`kernel_args: {swiotlb: "2048,noforce"}`',
        "extlinux, `check_swiotlb`",
        ["swiotlb=2048,noforce refused", "never 0, noforce or a bare flag"],
        "extlinux",
        {"kernel_args": {"swiotlb": "2048,noforce"}},
    ),
    row(
        "`swiotlb_size_mib: 1025` (role or profile)",
        "`layer_refusals` in pre-flight, and the swiotlb role",
        [
            "swiotlb_size_mib: SWIOTLB size 1025 MiB refused: it must be a whole number of MiB, at least 4 "
            "(swiotlb_min_mib) and at most 1024"
        ],
        "preflight",
        {"layers": ["swiotlb"], "swiotlb_size_mib": 1025},
    ),
    row(
        '`swiotlb_size_mib: "4.5"` (also `0`, `true`, `-4`, unset)',
        "`layer_refusals` in pre-flight",
        ["swiotlb_size_mib: SWIOTLB size 4.5 MiB refused: it must be a whole number of MiB"],
        "preflight",
        {"layers": ["swiotlb"], "swiotlb_size_mib": "4.5"},
    ),
    row(
        "a SWIOTLB size below the pool's high-water mark read from debugfs (no `swiotlb_force_below_usage`)",
        "`layer_refusals` in pre-flight",
        [
            "SWIOTLB size 4 MiB (2048 slots) refused: it is below the high-water mark observed on this device, 2500 "
            "slots",
            "or set swiotlb_force_below_usage: true to apply it anyway",
        ],
        "preflight",
        {
            "layers": ["swiotlb"],
            "swiotlb_use": {"peak_slots": 2500, "peak_mib": 4.88, "peak_source": "io_tlb_used_hiwater"},
        },
    ),
    # ---- FDT, overlays and install destinations confined to /boot ----
    row(
        "`fdt: /boot/../etc/evil.dtb`",
        "extlinux, `confine_to_boot`",
        ["fdt '/boot/../etc/evil.dtb' refused: it resolves to /etc/evil.dtb, outside /boot"],
        "extlinux",
        {"fdt": "/boot/../etc/evil.dtb"},
    ),
    row(
        "a relative `fdt` (`boot/dtb/x.dtb`)",
        "extlinux, `confine_to_boot`",
        ["fdt 'boot/dtb/x.dtb' refused: it must be an absolute path inside /boot"],
        "extlinux",
        {"fdt": "boot/dtb/x.dtb"},
    ),
    row(
        "an `overlays` item that is a symlink in /boot pointing outside it",
        "extlinux, `confine_to_boot` (real path)",
        ["overlay '/boot/link.dtb' refused: it resolves to /etc/evil.dtb, outside /boot"],
        "extlinux",
        {"fdt": STOCK_DTB, "overlays": ["/boot/link.dtb"]},
        {"symlink": ["boot/link.dtb", "../etc/evil.dtb"]},
    ),
    row(
        "`dest` of `dt_overlay` through a symlink out of /boot (`/boot/link/victim.dtbo`, `link -> ../etc`)",
        "dt_overlay, `confine` (option `boot_root`)",
        ["dest /boot/link/victim.dtbo refused: it resolves to /etc/victim.dtbo, outside /boot"],
        "dt_overlay",
        {"dest": "/boot/link/victim.dtbo"},
    ),
    row(
        "`dest` of `dt_overlay` with `..` (`/boot/../etc/new/carveouts.dtbo`), `state: absent`",
        "dt_overlay, `confine`",
        ["dest /boot/../etc/new/carveouts.dtbo refused: it resolves to /etc/new/carveouts.dtbo, outside /boot"],
        "dt_overlay",
        {"dest": "/boot/../etc/new/carveouts.dtbo", "state": "absent"},
    ),
    # ---- extlinux.conf itself, and writing it ----
    row(
        "an extlinux.conf that is not UTF-8 (Latin-1 `\\xe9`)",
        "extlinux, `read_conf`",
        [
            "/boot/extlinux/extlinux.conf is not UTF-8 text (byte 0xe9 at offset 8); refusing to edit a binary or "
            "differently encoded extlinux.conf"
        ],
        "extlinux",
        {"kernel_args": {"swiotlb": 2048}},
        {"conf": b"TIMEOUT \xe930\nDEFAULT primary\n\nLABEL primary\n  LINUX /boot/Image\n"},
    ),
    row(
        "a binary file in place of extlinux.conf (NUL bytes)",
        "extlinux, `read_conf`",
        ["/boot/extlinux/extlinux.conf contains a NUL byte (offset 7): not a text extlinux.conf; refusing to edit it"],
        "extlinux",
        {"kernel_args": {"swiotlb": 2048}},
        {"conf": b"TIMEOUT\x0030\nDEFAULT primary\n"},
    ),
    row(
        "`/boot` full while writing the new extlinux.conf (`ENOSPC`)",
        "extlinux, `write_conf`",
        [
            "cannot write /boot/extlinux/extlinux.conf: the file system is full (ENOSPC, in /boot/extlinux); nothing "
            "was changed and no temporary file or backup is left -- free space in /boot and re-run"
        ],
        "extlinux",
        {"kernel_args": {"swiotlb": 2048}, "backup": True},
        {"fail_write": ["ENOSPC", 2]},
    ),
    row(
        "the backup too large for `/boot` (`EFBIG`)",
        "extlinux, `write_conf`",
        [
            "the file is too large for it (EFBIG, in /boot/extlinux); nothing was changed and no temporary file or "
            "backup is left"
        ],
        "extlinux",
        {"kernel_args": {"swiotlb": 2048}, "backup": True},
        {"fail_write": ["EFBIG", 1]},
    ),
    row(
        "`backup_keep: 0`",
        "extlinux",
        ["backup_keep must be at least 1, got 0 (use backup: false for none)"],
        "extlinux",
        {"kernel_args": {"swiotlb": 2048}, "backup": True, "backup_keep": 0},
    ),
    # ---- units (edgeslim.jetson.units and the engine's services path, module_utils/units_apply.py) ----
    row(
        "`disable: [ssh]` with `protected: []`",
        "units, plan",
        [
            REFUSE + "unit ssh.service is protected and must not be stopped, disabled or masked (core set, cannot be "
            "unprotected -- ssh.service: management access"
        ],
        "units",
        {"disable": ["ssh"], "protected": []},
    ),
    row(
        "`disable: [sshd]` through the engine's services path",
        "engine (`units_apply`), plan",
        [REFUSE + "unit sshd.service is protected", "core set, cannot be unprotected"],
        "engine",
        {"disable": ["sshd"], "protected": []},
    ),
    row(
        "`mask: [dbus.socket]`",
        "units, plan",
        [
            REFUSE + "unit dbus.socket is protected",
            "core set",
            "stopping dbus.socket would also stop protected unit dbus.service (Requires= dbus.socket)",
        ],
        "units",
        {"mask": ["dbus.socket"]},
    ),
    row(
        "`disable: [dbus.service]`",
        "units, plan",
        [REFUSE + "unit dbus.service is protected", "core set"],
        "units",
        {"disable": ["dbus.service"]},
    ),
    row(
        "`disable: [systemd-journald]`",
        "units, plan",
        [REFUSE + "unit systemd-journald.service is protected", "core set"],
        "units",
        {"disable": ["systemd-journald"]},
    ),
    row(
        "`disable: [nv-l4t-bootloader-config]`",
        "units, plan",
        [REFUSE + "unit nv-l4t-bootloader-config.service is protected", "core set", "A/B slot"],
        "units",
        {"disable": ["nv-l4t-bootloader-config"]},
    ),
    row(
        "`disable: [l4t-rootfs-validation-config]`",
        "units, plan",
        [REFUSE + "unit l4t-rootfs-validation-config.service is protected", "core set"],
        "units",
        {"disable": ["l4t-rootfs-validation-config"]},
    ),
    row(
        "`mask: [serial-getty@ttyTCU0.service]` (the serial console)",
        "units, plan",
        [REFUSE + "unit serial-getty@ttyTCU0.service is protected (by serial-getty@*.service)", "core set"],
        "units",
        {"mask": ["serial-getty@ttyTCU0.service"]},
    ),
    row(
        "`disable: [getty@tty1.service]` through the engine",
        "engine (`units_apply`), plan",
        [REFUSE + "unit getty@tty1.service is protected (by getty@*.service)", "core set"],
        "engine",
        {"disable": ["getty@tty1.service"]},
    ),
    row(
        "`disable: [dbus-broker]`, a unit whose alias is `dbus.service`",
        "units, plan (names read from systemd)",
        [REFUSE + "unit dbus-broker.service is an alias of protected unit dbus.service; refusing to touch it"],
        "units",
        {"disable": ["dbus-broker"]},
        {"units": [{"id": "dbus-broker.service", "aliases": ["dbus.service"]}]},
    ),
    row(
        "`default_target: rescue.target`",
        "units, plan",
        [
            "default_target must be multi-user.target or graphical.target, got 'rescue.target' (any other target boots "
            "the device without ssh, or not at all)"
        ],
        "units",
        {"default_target": "rescue.target"},
    ),
    row(
        "`default_target: poweroff.target` through the engine",
        "engine (`units_apply`)",
        ["default_target must be multi-user.target or graphical.target, got 'poweroff.target'"],
        "engine",
        {"default_target": "poweroff.target"},
    ),
    row(
        "`disable: [ModemManager]`, management link on `wwp0s20f0u6i12` (predictable WWAN name)",
        "units, plan",
        [
            REFUSE + "unit ModemManager.service is protected",
            "ModemManager.service: carries the management link on wwp0s20f0u6i12",
        ],
        "units",
        {"disable": ["ModemManager"], "management_interface": "wwp0s20f0u6i12"},
    ),
    row(
        "`disable: [NetworkManager]`, management link on `wlan0`",
        "units, plan",
        [REFUSE + "unit NetworkManager.service is protected", "carries the management link on wlan0"],
        "units",
        {"disable": ["NetworkManager"], "management_interface": "wlan0"},
    ),
    row(
        "`disable: [net-helper]` where `ssh.service` has `BindsTo=net-helper.service`",
        "units, dependency walk",
        ["stopping net-helper.service would also stop protected unit ssh.service (BindsTo= net-helper.service)"],
        "units",
        {"disable": ["net-helper"]},
        {"units": [{"id": "net-helper.service", "bound_by": ["ssh.service"]}]},
    ),
    row(
        "`disable: [a]`, `keep: [app]`, `app.service` `Requires=a.service`",
        "units, dependency walk",
        ["stopping a.service would also stop kept unit app.service (Requires= a.service); refusing"],
        "units",
        {"disable": ["a"], "keep": ["app"]},
        {"units": [{"id": "a.service", "required_by": ["app.service"]}, {"id": "app.service"}]},
    ),
    # ---- the journal (module_utils/journal.py) ----
    row(
        "`journal.json` empty (0 bytes), then an apply",
        "journal, via units",
        [
            "cannot journal the previous states, nothing changed: journal.json: the journal is empty (0 "
            "bytes). It is never reset automatically",
            "journal.json.prev",
            "docs/journal.md",
        ],
        "units",
        {"disable": ["bluetooth"]},
        {"journal": "empty"},
    ),
    row(
        "`journal.json` truncated to half, then an apply",
        "journal, via units",
        [
            "cannot journal the previous states, nothing changed: journal.json: not valid JSON",
            "It is never reset automatically",
        ],
        "units",
        {"disable": ["avahi-daemon"]},
        {"journal": "half"},
    ),
    # ---- the reboot policy (module_utils/layer_inputs.py, filter reboot_policy_errors) ----
    row(
        "`edgeslim_reboot_ok: maybe` (also `-e edgeslim_reboot_ok=maybe`)",
        "`slim` role, first task; `rollback.yml`",
        ["edgeslim_reboot_ok must be true or false (or yes/no, 1/0), got 'maybe' (str)"],
        "reboot_policy",
        {"edgeslim_reboot_ok": "maybe"},
    ),
    row(
        "`carveouts_reboot_ok: on`",
        "`slim` role, first task; `rollback.yml`",
        ["carveouts_reboot_ok must be true or false (or yes/no, 1/0), got 'on' (str)"],
        "reboot_policy",
        {"carveouts_reboot_ok": "on"},
    ),
    row(
        "`swiotlb_reboot_ok: 2`",
        "`slim` role, first task; `rollback.yml`",
        ["swiotlb_reboot_ok must be true or false (or yes/no, 1/0), got 2 (int)"],
        "reboot_policy",
        {"swiotlb_reboot_ok": 2},
    ),
    # ---- carve-out inputs (pre-flight) ----
    row(
        "`carveouts_recipes: [no_gpu]`",
        "`layer_refusals` in pre-flight, and the carveouts role",
        [
            "carveouts_recipes: carveout recipes ['no_gpu'] refused: only the validated recipes headless and no_camera "
            "exist"
        ],
        "preflight",
        {"layers": ["carveouts"], "carveouts_recipes": ["no_gpu"]},
    ),
    row(
        "`carveouts_fdt_method: overlays` on L4T R35 (L4TLauncher ignores OVERLAYS there)",
        "`layer_refusals` in pre-flight",
        [
            "carveouts_fdt_method overlays refused on L4T 35.6.0: L4TLauncher applies the OVERLAYS line of "
            "extlinux.conf only from R36.2 on"
        ],
        "preflight",
        {
            "layers": ["carveouts"],
            "carveouts_fdt_method": "overlays",
            "l4t": {"major": 35, "minor": 6, "version": "35.6.0"},
        },
    ),
    row(
        "no reboot decision (`swiotlb_reboot_ok` and `edgeslim_reboot_ok` unset)",
        "`layer_refusals` in pre-flight",
        ["the SWIOTLB layer needs a reboot to take effect: set edgeslim_reboot_ok (or swiotlb_reboot_ok) to true"],
        "preflight",
        {"layers": ["swiotlb"], "swiotlb_reboot_ok": None},
    ),
]


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def code(fragment: str) -> str:
    """A message fragment as inline code (control characters shown escaped, as the page cannot show them)."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in fragment)
    fence = "``" if "`" in shown else "`"
    return f"{fence}{shown}{fence}" if fence == "`" else f"{fence} {shown} {fence}"


def table() -> str:
    lines = [BEGIN, "", "| # | input | where refused | message (fragments, in order) |", "| ---: | --- | --- | --- |"]
    for number, item in enumerate(ROWS, 1):
        message = " ... ".join(code(f) for f in item["message"])
        lines.append(f"| {number} | {cell(item['input'])} | {cell(item['where'])} | {cell(message)} |")
    return "\n".join([*lines, "", END])


def page_with_table(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + table() + text[end:]


if __name__ == "__main__":
    PAGE.write_text(page_with_table(PAGE.read_text()))
    sys.stdout.write(f"{PAGE}: {len(ROWS)} rows\n")
