# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: reboot_policy_errors
short_description: Why reboot-policy values (edgeslim_reboot_ok, <layer>_reboot_ok) are not strict booleans
description:
  - Takes a map of variable name to value and returns one message per value that is neither unset nor a strict
    boolean, so a play can refuse it before any change (Jinja's C(bool) filter turns C(maybe) into false).
  - Accepted - a YAML boolean, the strings C(true)/C(false)/C(yes)/C(no) in any case, C(1)/C(0) as numbers or strings
    (C(-e edgeslim_reboot_ok=true) passes a string). Unset - C(null) or the empty string (the boot layers then stop
    and ask for a decision).
  - Refused - anything else, for example C(maybe), C(on), C(y), C(2), C(1.0), a list.
author: edgeslim maintainers (@edgeslim)
options:
  _input:
    description: Variable name -> value.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Refuse a reboot policy that is not true or false
  ansible.builtin.assert:
    that: __errors | length == 0
    fail_msg: "{{ __errors | join('; ') }}"
  vars:
    __errors: "{{ {'edgeslim_reboot_ok': edgeslim_reboot_ok | default(none)} | edgeslim.jetson.reboot_policy_errors }}"
"""

RETURN = r"""
_value:
  description: One message per refused value (empty when every value is accepted or unset).
  type: list
  elements: str
"""

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.module_utils import layer_inputs


def reboot_policy_errors(values: Any) -> list[str]:
    if not isinstance(values, dict):
        raise AnsibleFilterError(f"reboot_policy_errors expects a dict of variable name -> value, got {values!r}")
    return layer_inputs.reboot_policy_errors(values)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"reboot_policy_errors": reboot_policy_errors}
