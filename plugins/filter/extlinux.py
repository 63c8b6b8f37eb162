# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: extlinux_summary
short_description: An extlinux.conf as L4TLauncher reads it (DEFAULT, TIMEOUT, entries)
description:
  - Parses the text of an C(extlinux.conf) with the same parser as the M(edgeslim.jetson.extlinux) module and returns
    its summary, for decisions on the controller about a file read with M(ansible.builtin.slurp).
  - Fails on a file L4TLauncher would not boot (e.g. an entry without a LINUX line).
author: edgeslim maintainers (@edgeslim)
options:
  _input:
    description: The file's text.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Read the boot configuration
  ansible.builtin.slurp:
    src: /boot/extlinux/extlinux.conf
  register: conf

- name: Which entry boots next
  ansible.builtin.debug:
    msg: "{{ (conf.content | b64decode | edgeslim.jetson.extlinux_summary).boot_label }}"
"""

RETURN = r"""
_value:
  description: default_label, default_found, timeout, labels, entries (label, menu_label, linux, initrd, fdt,
    append, overlays), boot_label and boot_entry (what L4TLauncher boots - DEFAULT if it names an entry, else the
    first), as the module's RV(edgeslim.jetson.extlinux#module:summary) return value.
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x


def extlinux_summary(text) -> dict:
    if not isinstance(text, str):
        raise AnsibleFilterError(f"extlinux_summary: expected the file's text, got {type(text).__name__}")
    try:
        return x.parse_extlinux(text).summary()
    except x.ExtlinuxError as exc:
        raise AnsibleFilterError(f"extlinux_summary: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"extlinux_summary": extlinux_summary}
