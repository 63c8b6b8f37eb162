#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: rollout_guard
short_description: Refuse canary settings that the running play could not honour
description:
  - Compares the canary batch sizes and failure budget that a host's variables ask for (O(serial),
    O(max_fail_percentage)) with the C(serial) and C(max_fail_percentage) the running play was built with.
  - Ansible templates these play keywords before it reads the inventory, so C(edgeslim_serial) or
    C(edgeslim_max_fail_percentage) set in C(group_vars) or C(host_vars) would be silently ignored. This action
    fails the host, before any change, when the values differ, and says to pass them as extra variables.
  - An option that is not given is not compared. Runs on the controller only; changes nothing.
version_added: 0.2.0
author: edgeslim maintainers (@edgeslim)
options:
  serial:
    description: Batch sizes the host's variables ask for (a number, a percentage such as V(10%), or a list of them).
    type: raw
  max_fail_percentage:
    description: Failure budget the host's variables ask for (percent of a batch).
    type: raw
attributes:
  check_mode:
    description: Compares values only; it runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing changes, so there is no diff.
    support: none
  platform:
    description: Runs on the controller (action plugin); no device round trip.
    support: full
    platforms: all
"""

EXAMPLES = r"""
- name: Refuse canary settings set where the play cannot read them
  edgeslim.jetson.rollout_guard:
    serial: "{{ edgeslim_serial | default(omit) }}"
    max_fail_percentage: "{{ edgeslim_max_fail_percentage | default(omit) }}"
"""

RETURN = r"""
play:
  description: The C(serial) and C(max_fail_percentage) of the running play, normalised.
  returned: always
  type: dict
  sample: {"serial": [1, "10%", "100%"], "max_fail_percentage": 0.0}
refusals:
  description: One sentence per setting that differs.
  returned: failed
  type: list
  elements: str
"""
