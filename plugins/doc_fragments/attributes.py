# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module attributes shared by the collection's modules (``extends_documentation_fragment``)."""

from __future__ import annotations


class ModuleDocFragment:
    # A module that only reads the device. A module's own entry for an attribute replaces the fragment's.
    READ_ONLY = r"""
options: {}
attributes:
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing is changed, so there is no diff.
    support: none
  platform:
    description: Linux.
    support: full
    platforms: posix
"""
