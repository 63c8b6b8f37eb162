# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of the UEFI capsule's device side, shared by edgeslim.jetson.uefi_capsule and edgeslim.jetson.capsule."""

from __future__ import annotations


class ModuleDocFragment:
    # Where the device shows its boot chain and firmware state; the argument specs carry the same defaults.
    DOCUMENTATION = r"""
options:
  rootfs_ab_synced:
    description: On rootfs A/B devices, the operator states that the inactive rootfs slot is a current copy.
    type: bool
    default: false
  nvbootctrl:
    description: argv prefix of nvbootctrl.
    type: list
    elements: str
    default: [nvbootctrl]
  efivars_path:
    description: efivarfs mount.
    type: path
    default: /sys/firmware/efi/efivars
  esrt_path:
    description: ESRT directory in sysfs.
    type: path
    default: /sys/firmware/efi/esrt
"""
