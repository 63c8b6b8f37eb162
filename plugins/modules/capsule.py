#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: capsule
short_description: Deliver the firmware carveouts of a Jetson by UEFI capsule, refusals to verification in one task
description:
  - The carveouts layer's firmware path (docs/carveouts.md) as one action plugin; the device work goes through
    M(edgeslim.jetson.uefi_capsule), M(edgeslim.jetson.carveouts_info), M(edgeslim.jetson.memory_snapshot),
    M(edgeslim.jetson.device_lock) and ansible.builtin modules. Called by the C(edgeslim.jetson.carveouts) role.
  - V(validate), before the layer's first change - refuses a module without a BUP spec in O(bup_specs) (module id,
    then board id), build commands naming another module's BUP spec, a missing build interface, and one capsule
    output for several BUP specs in the play (the other play hosts' modules come from their registered
    C(__carveouts_info)); fills the placeholders C({bup_spec}), C({chip}), C({chip_family}); then refuses on the
    device a boot-chain or rootfs A/B state that makes a capsule unsafe and an ESP that is not a mount point.
  - V(deliver) - holds O(bootloader_package) when O(hold); builds the capsule on the controller once per BUP spec and
    build commands across the play's hosts (a lock per build directory, a result cache per run; check mode builds
    nothing); refuses a capsule that is not an FMP capsule for the chip; compares its sha256 with the device's record
    (C(/var/lib/edgeslim/capsule.json)). A capsule not applied yet is staged in the ESP, requested (O(request)) and
    recorded; with O(reboot_ok) the device reboots, the device lock O(lock) is taken again, and the other boot chain,
    the ESRT and the capsule update status are checked before the applied record is written. A failure from the
    staging on cancels the request, removes the staged capsule and puts the previous record back. An applied capsule
    (and check mode) reads the device for drift instead.
  - V(unhold) marks the package edgeslim held (marker file C(/var/lib/edgeslim/bootloader-hold)) for install again; a
    hold the operator set stays.
version_added: 0.2.0
author: edgeslim maintainers (@edgeslim)
extends_documentation_fragment:
  - edgeslim.jetson.uefi_capsule
options:
  phase:
    description: What to do (see the description).
    type: str
    choices: [validate, deliver, unhold]
    default: deliver
  info:
    description: The M(edgeslim.jetson.jetson_info) result of the device (V(validate)).
    type: dict
  inputs:
    description: The carveouts layer's inputs (C(carveouts_inputs)); the accepted recipes are recorded (V(validate)).
    type: dict
  profile:
    description: The resolved C(edgeslim_profile) (its carveouts recipes are the default).
    type: dict
  validated:
    description: The C(capsule) return of V(validate) (V(deliver)).
    type: dict
  bup_specs:
    description: BUP spec per module id or board id (C(carveouts_capsule_bup_specs)).
    type: dict
  build_commands:
    description: argv lists run in order in O(build_chdir) on the controller (C(carveouts_capsule_build_commands)).
    type: list
    elements: list
  build_chdir:
    description: The patched C(Linux_for_Tegra) (C(carveouts_capsule_build_chdir)).
    type: path
  build_output:
    description: The capsule the build leaves, relative to O(build_chdir) or absolute
      (C(carveouts_capsule_build_output)).
    type: str
  build_cache_dir:
    description: Where the build lock and the per-run build results are kept on the controller (default - the
      controller's temporary directory, C(edgeslim-capsule-<uid>)).
    type: path
  esp_path:
    description: Mount point of the ESP (C(carveouts_capsule_esp_path)).
    type: path
    default: /opt/nvidia/esp
  esp_must_be_mount:
    description: Refuse when O(esp_path) is not a mount point.
    type: bool
    default: true
  name:
    description: File name of the staged capsule under C(EFI/UpdateCapsule/).
    type: str
    default: TEGRA_BL.Cap
  request:
    description: Set the capsule bit of C(OsIndications) after staging (C(carveouts_capsule_request)).
    type: bool
    default: true
  reboot_ok:
    description: Reboot now to apply the capsule and verify it; otherwise the capsule waits for the next boot.
    type: bool
    default: false
  reboot_timeout:
    description: Seconds the capsule boot may take.
    type: int
    default: 1800
  boot_time_command:
    description: The reboot's C(boot_time_command) (empty - the reboot module's own).
    type: str
  boot_id_command:
    description: argv printing the boot identity for M(edgeslim.jetson.memory_snapshot) (empty - the kernel boot_id).
    type: list
    elements: str
  devicetree_path:
    description: The live device tree M(edgeslim.jetson.carveouts_info) reads.
    type: path
    default: /sys/firmware/devicetree/base
  kernel_log_command:
    description: argv printing the kernel log (its boot memory line).
    type: list
    elements: str
    default: [dmesg]
  drift_tolerance_mb:
    description: MiB that MemTotal and the boot memory total may be below the record before it counts as drift.
    type: float
    default: 4
  hold:
    description: Hold O(bootloader_package) (apt-mark hold) so an L4T upgrade cannot stage NVIDIA's stock capsule.
    type: bool
    default: false
  bootloader_package:
    description: The L4T bootloader package.
    type: str
    default: nvidia-l4t-bootloader
  lock:
    description: The run's device lock (run_id, path, ttl, holder of M(edgeslim.jetson.device_lock)), taken again after
      the capsule reboot; omit when the run holds none.
    type: dict
attributes:
  check_mode:
    description: Builds, stages and requests nothing; reads the device's record and drift and reports C(check_mode).
    support: full
  diff_mode:
    description: No diff is returned.
    support: none
  platform:
    description: Action plugin - the build on the controller, the rest on Jetson (L4T) devices with UEFI.
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Refuse what the capsule cannot be built or staged for
  edgeslim.jetson.capsule:
    phase: validate
    info: "{{ jetson }}"
    bup_specs: {p3767: t23x_3767_bl_spec}
    build_commands:
      - [./l4t_generate_soc_bup.sh, -e, "{bup_spec}", "{chip_family}"]
    build_chdir: /srv/bsp/Linux_for_Tegra
    build_output: "TEGRA_BL-{bup_spec}.Cap"
  register: checked

- name: Deliver it, rebooting to apply and verify it
  edgeslim.jetson.capsule:
    phase: deliver
    validated: "{{ checked.capsule }}"
    reboot_ok: true
  register: delivered
  failed_when: false
"""

RETURN = r"""
capsule:
  description: V(validate) - the BUP spec, filled build commands, capsule source and ESP path, recipes, slot before.
  returned: phase validate, success
  type: dict
report:
  description: The carveouts layer's part of the run report - C(details.capsule) (status applied, pending_reboot,
    staged, unchanged, drift, check_mode or failed), C(details.bootloader_package), C(reclaimed_mb), C(drift).
  returned: always
  type: dict
drift:
  description: What the device shows against the record taken after the capsule (empty - no drift).
  returned: phase deliver, when the capsule was not delivered
  type: list
  elements: str
capsule_failed:
  description: Whether the call failed (the caller registers the result with failed_when false).
  returned: always
  type: bool
"""
