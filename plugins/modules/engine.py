#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: engine
short_description: The slimming engine on the device - probe (read-only), then apply in one run
version_added: 0.1.0
description:
  - Runs on the device, called twice by its action plugin of the same name (C(edgeslim.jetson.engine) in a task runs
    the action plugin, which resolves the profile on the controller and calls this module).
  - V(probe) reads everything the plan needs and changes nothing - the management link (the interface carrying
    the play's SSH connection, found from C(SSH_CONNECTION) of the nearest ancestor process, so it works under
    become), the local graphical sessions in use (when O(services.check_display)), the exact unit plan of
    M(edgeslim.jetson.units) in check mode (protected units refused here, the carriers of the management link
    among them), the journald drop-in change and the memory each unit that would stop holds.
  - V(apply) plans again, measures the "before" snapshot (meminfo and the memory of every unit about to stop),
    journals the previous states, applies the unit batch and verifies it, writes the journald drop-in and restarts
    journald, then waits for MemAvailable to settle (adaptive, see O(measure)) and measures the "after" snapshot.
    It returns the services layer's report record.
  - On any error after the first change, V(apply) restores the units, the default target and the drop-in from the
    journal before failing, and says what it restored (or that the restore failed and the journal is kept).
  - O(boot) carries the boot layers (SWIOTLB, carveouts) in the same two runs; they take effect at the next boot.
  - The run around the layers rides in the same device runs (the slim flow's, docs/development.md "The engine") -
    V(probe) takes the device lock first (O(lock), the lock of M(edgeslim.jetson.device_lock)), runs pre-flight
    (O(preflight)) and takes the report's baseline (O(report)); the run that ends it (O(finish) - the probe when nothing
    changes, apply when no reboot follows, verify after the reboot) takes the after snapshot, writes the metrics file
    (O(metrics), as M(edgeslim.jetson.metrics_textfile)) and gives the lock back. A failure gives the lock back too
    (and writes the metrics file), unless it left a change of this run for the caller's rescue (C(lock.held)).
author: edgeslim maintainers (@edgeslim)
options:
  phase:
    description:
      - V(probe) (read-only) or V(apply). Set by the action plugin, which runs one or both; a task does not set it.
      - V(verify), after the reboot into the boot layers (read-only) - the checker's verdict of each layer, the
        running kernel's SWIOTLB pool and command line, the live device tree and MemTotal against O(before) - gives
        each boot layer's record.
      - V(finish) only ends the run - the metrics file (O(metrics.result)) and the lock given back (a refusal on the
        controller after the probe).
      - V(rollback) restores the layers in O(layers) from the journal (boot layers first - carveouts, then SWIOTLB,
        each through the same restore as the deadline's, its signing strict - then the services layer) and gives
        each one's record - C(rolled_back), C(unchanged) (nothing journaled) or C(failed) (the journal layer kept).
        Check mode says what would change.
    type: str
    required: true
    choices: [probe, apply, verify, finish, rollback]
  lock:
    description:
      - The run's device lock (the lock file, holder record and transient unit of M(edgeslim.jetson.device_lock)).
        Given back when the run ends (O(finish)) or fails; omit for no lock.
    type: dict
    suboptions:
      run_id:
        description: Identifies the run; names the holder unit.
        type: str
        required: true
      path:
        description: The lock file.
        type: path
        default: /run/edgeslim/device.lock
      ttl:
        description: Seconds the lock is held at most.
        type: int
        default: 7200
      holder:
        description: Who holds it (C(controller), C(user), C(playbook), C(started)), for the record and refusals.
        type: dict
        default: {}
      wait:
        description: Seconds to wait for the holder unit to take the lock.
        type: float
        default: 10
  take_lock:
    description:
      - Take O(lock) before anything is read (refused, naming the holder, while another run holds it). Set by the
        action plugin for V(probe) and V(verify) (a reboot empties C(/run)).
    type: bool
    default: false
  finish:
    description:
      - Whether this run ends the run when it succeeds - V(yes), V(no), or V(if_unchanged) (V(probe) - when nothing
        changes). Set by the action plugin.
    type: str
    default: "no"
    choices: ["no", "yes", if_unchanged]
  preflight:
    description:
      - V(probe) only. The checks of the C(edgeslim.jetson.preflight) role with its messages, after the lock and
        before anything else is read - a Jetson, a supported L4T major, free space on the filesystem holding
        O(preflight.boot_path), and UEFI Secure Boot - on and no O(boot.sign_command) - skips the boot layers with the
        role's reason.
    type: dict
    suboptions:
      host:
        description: The host's name in the messages (the action plugin sets C(inventory_hostname)).
        type: str
        default: this host
      require_jetson:
        description: Refuse a host that is not a Jetson.
        type: bool
        default: true
      supported_l4t_majors:
        description: L4T major releases accepted.
        type: list
        elements: int
        default: [35, 36, 38, 39]
      boot_path:
        description: The directory whose filesystem must have room.
        type: path
        default: /boot
      boot_min_free_mb:
        description: MB that must be free there.
        type: int
        default: 16
      sign_command:
        description:
          - Without O(boot) (pre-flight on its own, the C(edgeslim.jetson.preflight) role) - the signing hook the boot
            layers would run; on a UEFI Secure Boot device without one, C(boot_layers_refused) says why they would be
            skipped. With O(boot), O(boot.sign_command) counts.
        type: list
        elements: str
      devicetree_path: &devicetree_path
        description: The live device tree (kernel layout).
        type: path
        default: /sys/firmware/devicetree/base
      release_path: &release_path
        description: The L4T release file.
        type: path
        default: /etc/nv_tegra_release
      efivars_path: &efivars_path
        description: efivarfs, for the UEFI Secure Boot state.
        type: path
        default: /sys/firmware/efi/efivars
  report:
    description:
      - Take the fleet report's snapshots - the baseline in V(probe) (before anything changes), the after snapshot in
        the run that ends the run (MemTotal, MemAvailable, boot identity; the median of O(measure.samples)).
    type: bool
    default: false
  metrics:
    description:
      - The node_exporter textfile-collector file written by the run that ends the run (or fails it), with the figures
        of every layer record of the run and the drift checked against the journal; written nothing in check mode.
    type: dict
    suboptions:
      path:
        description: The file (must end in C(.prom)).
        type: path
        default: /var/lib/node_exporter/textfile_collector/edgeslim.prom
      playbook:
        description: The playbook this run is.
        type: str
        default: slim
        choices: [slim, rollback, audit]
      version:
        description: The collection version (the action plugin reads it).
        type: str
        required: true
      drift_check:
        description: Check services and boot entry drift against the journal.
        type: bool
        default: true
      journal_path:
        description: On-device journal the drift is checked against.
        type: path
        default: /var/lib/edgeslim/journal.json
      records:
        description: Layer records of the run's earlier device runs (the action plugin passes apply's to verify).
        type: dict
        default: {}
      result:
        description: V(finish) only - the run's result.
        type: str
        default: failed
        choices: [ok, failed, rolled_back]
  records:
    description:
      - Controller side only. The layer records of the call before the reboot (V(verify)); the action plugin passes
        them on as O(metrics.records).
    type: dict
  wait:
    description:
      - V(verify) only. Wait for the checker's verdict of this layer (all boot layers of one boot are checked
        together) up to O(wait.timeout) seconds before verifying; when the device reverted and has not rebooted yet
        (or the connection drops while it does), the result is C(revert_reboot) - wait for the device, then verify
        again.
    type: dict
    suboptions:
      layer:
        description: The boot layer whose verdict says the checker is done.
        type: str
        required: true
        choices: [swiotlb, carveouts]
      timeout:
        description: Seconds to wait at most.
        type: float
        default: 600
      interval:
        description: Seconds between readings.
        type: float
        default: 2
  before:
    description:
      - V(verify) only - C(memtotal_kb) and C(boot_id) from the V(apply) run (its C(boot.snapshot)).
    type: dict
    default: {}
  rollback:
    description:
      - Controller side only. The layers to restore from the journal instead of applying anything (C(services),
        C(swiotlb), C(carveouts)); the action plugin runs the V(rollback) phase once with them, O(boot) naming the
        boot layers' paths, and returns C(report), C(reboot) and C(reboot_pending). O(profile) is not needed.
    type: list
    elements: str
    choices: [services, swiotlb, carveouts]
  reboot:
    description:
      - Controller side only. When given, the action plugin makes the reboot itself - in the same task, after V(apply)
        staged a boot layer whose reboot policy allows it, or after a V(rollback) that restored a boot entry - with
        C(ansible.builtin.reboot) (C(systemctl kexec) into a loaded trial kernel), then runs V(verify), which takes the
        lock again and waits for the verdict; after a revert reboot it waits for the device (C(wait_for_connection))
        and verifies again, every 20 s up to O(reboot.wait_timeout). After a rollback's reboot the run's O(lock) is
        taken again. Omit it and the caller reboots (C(reboot) in the result) and calls V(verify) itself.
    type: dict
    suboptions:
      timeout:
        description: Seconds C(ansible.builtin.reboot) waits for the device to come back.
        type: int
        default: 900
      boot_time_command:
        description: C(ansible.builtin.reboot)'s C(boot_time_command); empty is its default.
        type: str
        default: ""
      wait_timeout:
        description: Seconds to wait for the device's verdict and, after a revert, for the device to answer again.
        type: int
        default: 600
  running_label:
    description:
      - Controller side only, with O(rollback). The entry the device runs after reverting a change by itself; no
        C(reboot) when the restored extlinux.conf boots that entry.
    type: str
  profile:
    description:
      - Controller side only. The resolved C(edgeslim_profile); the action plugin selects its blocks from
        C(ansible_run_tags)/C(ansible_skip_tags), turns it into O(services) and never sends it to the device.
    type: dict
  services:
    description: The services layer's request. Omit to leave the services layer alone.
    type: dict
    suboptions:
      disable:
        description: Units to stop and disable (see M(edgeslim.jetson.units)).
        type: list
        elements: str
        default: []
      mask:
        description: Units to stop and mask.
        type: list
        elements: str
        default: []
      keep:
        description: Units never touched.
        type: list
        elements: str
        default: []
      protected:
        description: Units (or patterns) refused before any change; adds to the module's core set.
        type: list
        elements: str
        default: []
      default_target:
        description: V(multi-user.target) or V(graphical.target); omit to leave it alone.
        type: str
      companions:
        description: Also act on the sockets, paths and timers that trigger a listed unit.
        type: bool
        default: true
      blocks:
        description: Unit name to the profile block that asked for it (journaled and reported).
        type: dict
        default: {}
      selected_blocks:
        description: Names of the profile blocks of this run, reported in the record's C(details.blocks).
        type: list
        elements: str
        default: []
      journald:
        description: C([Journal]) settings for the edgeslim drop-in; V({}) writes none.
        type: dict
        default: {}
      journald_dropin:
        description: The drop-in file owned by edgeslim.
        type: path
        default: /etc/systemd/journald.conf.d/60-edgeslim.conf
      check_display:
        description: Probe the local graphical sessions in use (C(loginctl)); the action plugin refuses to go
          headless while one is active.
        type: bool
        default: true
      verify_delay:
        description: Seconds to wait after the unit changes before verifying them.
        type: float
        default: 1.0
  layers:
    description:
      - Controller side only. The layers this task performs; the action plugin removes it.
    type: list
    elements: str
    choices: [services, swiotlb, carveouts]
    default: [services]
  boot:
    description:
      - The boot layers' request (SWIOTLB, carveouts). Omit to leave the boot layers alone.
      - V(probe) adds C(boot) - the extlinux summary, the free space of the boot directory, the SWIOTLB pool and what
        the kernel allocates for the new size, the device (chip, module, L4T, Secure Boot) and the device-tree plan
        (the overlay source to compile on the controller) - and the ONE edit of the managed entry as a diff.
      - V(apply) journals first (each layer's extlinux record and the boot files it replaces), installs the
        overlay or merged DTB, arms commit-or-revert (checker, unit, C(pending/<layer>.json) fsynced), and only then
        writes extlinux.conf once - the managed entry with every selected layer and DEFAULT together (with a trial
        boot, O(boot.trial), DEFAULT stays on the stock entry). On an error it restores what it changed before it
        fails.
      - Under UEFI Secure Boot it runs O(boot.sign_command) on each boot file it writes (see there); without a
        signing hook a Secure Boot device is refused before any change.
    type: dict
    suboptions:
      settings:
        description:
          - Controller side only. The layers' variables as the roles resolve them (C(swiotlb_size_mib),
            C(swiotlb_min_mib), C(swiotlb_force_below_usage), C(carveouts_recipes), C(carveouts_fdt_method),
            C(edgeslim_reboot_ok), C(swiotlb_reboot_ok), C(carveouts_reboot_ok), ...), checked by
            P(edgeslim.jetson.layer_refusals#filter)'s rules; the action plugin turns them into O(boot.swiotlb.slots),
            O(boot.carveouts.recipes) and O(boot.carveouts.fdt_method).
        type: dict
      cache_dir:
        description: Controller side only. Where compiled overlays are kept by the hash of their source.
        type: path
        default: ~/.cache/edgeslim/overlays
      extlinux_path:
        description:
          - The extlinux.conf file L4TLauncher reads.
          - Its timestamped backups are kept beside it (O(boot.backup)).
        type: path
        default: /boot/extlinux/extlinux.conf
      boot_root:
        description:
          - The overlay and the merged DTB must resolve inside this directory (after C(..) and symlinks).
        type: path
        default: /boot
      managed_label:
        description: LABEL of the managed entry every boot layer shares.
        type: str
        default: edgeslim
      managed_menu_label:
        description: Its MENU LABEL (one identity whichever layers it carries).
        type: str
        default: "edgeslim: slimmed boot entry"
      root:
        description: Prefix under which the absolute paths named in extlinux.conf are found (tests).
        type: path
        default: /
      backup:
        description: Keep a timestamped copy of extlinux.conf before writing it.
        type: bool
        default: true
      backup_keep:
        description: How many such copies to keep.
        type: int
        default: 3
      # the same options as pre-flight's (YAML aliases of preflight.devicetree_path, release_path, efivars_path)
      devicetree_path: *devicetree_path
      release_path: *release_path
      efivars_path: *efivars_path
      cmdline_path:
        description: The running kernel's command line.
        type: path
        default: /proc/cmdline
      measure_in_container:
        description:
          - In a container the kernel is the host's, so V(verify) reports C(unverified_container) with no reclaimed
            figure. V(true) when the container's MemTotal follows the booted entry (the simulated fleet's boot
            stand-in) - the MemTotal delta is then reported as measured.
        type: bool
        default: false
      swiotlb:
        description: The SWIOTLB layer - C(swiotlb=<slots>) in APPEND of the managed entry.
        type: dict
        suboptions:
          slots:
            description: Slots of 2 KiB (the action plugin computes them from the size and checks them).
            type: int
            required: true
          debugfs_path:
            description: The pool's debugfs directory.
            type: path
            default: /sys/kernel/debug/swiotlb
          max_boots:
            description: Boots the change may take to commit before the device reverts it.
            type: int
            default: 3
      carveouts:
        description: The carveouts layer - FDT and OVERLAYS (or a merged FDT) in the managed entry.
        type: dict
        suboptions:
          recipes:
            description: Carveout recipes to disable (docs/carveouts.md).
            type: list
            elements: str
            required: true
          fdt_method:
            description: V(overlays) (R36.2 and later), V(merged), or V(auto) for the L4T release.
            type: str
            default: auto
            choices: [auto, overlays, merged]
          overlay_path:
            description: The installed overlay.
            type: path
            default: /boot/edgeslim/carveouts.dtbo
          merged_fdt_path:
            description: The installed merged DTB (merged method).
            type: path
            default: /boot/edgeslim/kernel-carveouts.dtb
          fdt:
            description: The board's DTB when the stock entry has no FDT line.
            type: str
          dtc:
            description: Controller side only. argv of the controller's dtc.
            type: list
            elements: str
            default: [dtc]
          fdtoverlay:
            description: Controller side only. argv of the controller's fdtoverlay (merged method).
            type: list
            elements: str
            default: [fdtoverlay]
          dtbo_b64:
            description: The overlay compiled on the controller (base64); checked against the plan before install.
            type: str
          overlaid_b64:
            description: The base DTB with the entry's own overlays applied (merged method, base64).
            type: str
          merged_b64:
            description: The merged DTB made on the controller (base64); checked before install.
            type: str
          max_boots:
            description: Boots the change may take to commit before the device reverts it.
            type: int
            default: 3
      checks:
        description:
          - Health checks the checker runs at boot per layer, besides the layer's own (the command line and the
            kernel log for swiotlb, the disabled nodes for carveouts) - layer name to C(units_active) (units that
            must be active), C(command) (a shell command that must exit 0) and C(timeout) (seconds per command).
          - C(management) (default V(true)) - the management path seen at arm time must be back within
            C(management_wait) seconds (default 60, at most 180) - the interface up with the address the controller
            reached, a route to the controller through it and a listener on the SSH port; without SSH (ansible-pull,
            a local connection) the default route's interface, its addresses and the route to its gateway. A device
            with no network path at arm time records why, and the check is skipped with a note. V(false) switches
            it off for the layer.
        type: dict
        default: {}
      sign_command:
        description:
          - The UEFI Secure Boot signing hook (C(edgeslim_secure_boot_sign_command)) - an argv run on the device,
            without a shell, for each boot file V(apply) writes, every C({file}) replaced by the file's path. It must
            exit 0 and write a non-empty C(<file>.sig) (a detached signature L4TLauncher verifies against the db keys)
            within 120 seconds. It must name the file with C({file}).
          - Run only when the device is in UEFI Secure Boot (L4TLauncher checks C(.sig) files only then), never in
            check mode. Signed - the overlay and the merged DTB right after they are installed, before
            commit-or-revert is armed, and extlinux.conf after its one write; the pending records carry the hook, so
            the checker signs extlinux.conf again when it reverts at boot.
          - Each current C(<file>.sig) is set aside as C(<file>.sig.edgeslim-prev) first and dropped once V(apply)
            succeeded. A hook that fails or leaves no (or an empty) C(.sig) fails V(apply) - the signatures set aside
            are put back, everything is restored, and the restored extlinux.conf and boot files are signed again (a
            failure there is a warning, C(sign_warnings), the previous signature kept).
          - Empty - a Secure Boot device is refused before any change.
        type: list
        elements: str
        default: []
      trial:
        description:
          - How the next boot tries the managed entry. V(auto) - a trial boot by kexec where the device can (a
            C(kexec) binary, a kernel with kexec, not a container, no C(OVERLAYS) in the entry) - V(apply) writes
            the entry but leaves DEFAULT on the stock entry and loads the managed entry with C(kexec -l), its APPEND
            with C(panic=) and the marker C(edgeslim.trial=<id>); the caller reboots with C(systemctl kexec). The
            checker makes the entry DEFAULT on the trial boot once its checks pass, and reports C(trial_failed) when
            the device comes back on the stock entry (a panic before userspace resets the board, the firmware
            boots DEFAULT). Where the device cannot, V(apply) switches DEFAULT as with V(none) and C(boot.trial)
            says why.
          - V(none) - DEFAULT switched by V(apply). The action plugin passes V(auto) only for an apply its caller
            reboots right after (a reboot policy that allows it) and O(boot.trial) is not V(none).
        type: str
        choices: [auto, none]
        default: none
      trial_panic_seconds:
        description: The C(panic=) seconds of the trial boot's command line.
        type: int
        default: 10
      checker:
        description: The commit-or-revert checker armed for the next boot (the action plugin fills it in).
        type: dict
        suboptions:
          program:
            description: The checker program's text.
            type: str
            required: true
          unit:
            description: Its systemd unit's text.
            type: str
            required: true
          program_path:
            description: Where the program goes.
            type: path
            default: /usr/local/lib/edgeslim/edgeslim-boot-commit
          unit_path:
            description: Where the unit goes.
            type: path
            default: /etc/systemd/system/edgeslim-boot-commit.service
          state_dir:
            description: Its state (C(pending/), C(boot-commit/)).
            type: path
            default: /var/lib/edgeslim
          boot_id_command:
            description: argv printing the boot identity.
            type: list
            elements: str
            default: [cat, /proc/sys/kernel/random/boot_id]
  deadline:
    description:
      - Seconds after which a run whose controller vanished is restored on the device by itself (0 - none). With
        O(lock) (a slim run) and outside check mode, V(apply) arms it right after the journal is written and before
        its first change - a transient timer C(edgeslim-deadline-<run id>) whose service runs the restore program
        (O(deadline_program_path)) - and the run that ends the run (or a failure that restored and gives the lock
        back) disarms it. A reboot ends it (transient units do not survive one); V(verify) arms it again when the
        run goes on after it. See docs/reliability.md, "The controller vanishes mid-run".
    type: int
    default: 1800
  deadline_program_path:
    description: Where V(apply) installs the restore program (a zip application of the engine's module_utils).
    type: path
    default: /usr/local/lib/edgeslim/edgeslim-deadline.pyz
  journal_path:
    description: On-device journal file.
    type: path
    default: /var/lib/edgeslim/journal.json
  management_interface:
    description:
      - Interface the controller reaches the device on; overrides the one found from the SSH connection. Its
        carrier units are protected for the run.
    type: str
  measure:
    description: How V(apply) measures.
    type: dict
    default: {}
    suboptions:
      samples:
        description: meminfo readings per snapshot (median); also the stable window of the settle.
        type: int
        default: 3
      interval:
        description: Seconds between readings.
        type: float
        default: 1.0
      settle_timeout:
        description: Longest wait, in seconds, for MemAvailable to settle after the changes.
        type: float
        default: 30
      stable_kb:
        description: Settled when O(measure.samples) consecutive readings of MemAvailable lie within this many kB.
        type: int
        default: 2048
      drop_caches:
        description: Drop the page cache before each snapshot (real hosts only, not containers).
        type: bool
        default: false
      boot_id_command:
        description: argv printing the boot identity; default the kernel's boot_id.
        type: list
        elements: str
      meminfo_path:
        description: meminfo file (tests point it at a fixture).
        type: path
        default: /proc/meminfo
attributes:
  check_mode:
    description: V(probe) is read-only; V(apply) in check mode returns the plan without changing anything.
    support: full
  diff_mode:
    description: One line per unit (state before and after), the default target and the journald drop-in.
    support: full
  platform:
    description: Linux with systemd.
    support: full
    platforms: posix
seealso:
  - module: edgeslim.jetson.units
  - module: edgeslim.jetson.memory_snapshot
"""

EXAMPLES = r"""
- name: Services layer of the resolved profile (the action plugin probes, then applies once)
  edgeslim.jetson.engine:
    profile: "{{ edgeslim_profile }}"
    services:
      companions: true
      check_display: true
    measure:
      settle_timeout: 30
  register: engine

- name: The record
  ansible.builtin.debug:
    var: engine.report.services

- name: Both boot layers in one apply (one extlinux.conf write, armed before DEFAULT changes)
  edgeslim.jetson.engine:
    profile: "{{ edgeslim_profile }}"
    layers: [swiotlb, carveouts]
    boot: &boot_layers
      settings:
        swiotlb_size_mib: 4
        carveouts_recipes: [headless, no_camera]
        carveouts_fdt_method: auto
        edgeslim_reboot_ok: true
      checks:
        swiotlb:
          units_active: [ssh.service]
  register: boot

- name: Reboot once for both
  when: boot.reboot
  ansible.builtin.reboot:

- name: Verify after the reboot (verdicts, running kernel, device tree, MemTotal)
  when: boot.reboot
  edgeslim.jetson.engine:
    profile: "{{ edgeslim_profile }}"
    layers: [swiotlb, carveouts]
    boot: *boot_layers  # the same settings as the apply run
    before: "{{ boot.apply.boot.snapshot }}"
"""

RETURN = r"""
preflight:
  description: V(probe) with O(preflight) - C(is_jetson), C(reason), C(model), C(soc), C(l4t), C(secure_boot),
    C(boot_free_mb), C(boot_layers_refused) (the reason the boot layers were skipped, or empty).
  returned: when O(preflight) is given
  type: dict
memory:
  description: The report's snapshots of the call (C(before) from the probe, C(after) from the run that ended the run) -
    C(MemTotal_kb), C(MemAvailable_kb), C(boot_id) (set by the action plugin).
  returned: when O(report) is true
  type: dict
lock_held:
  description: Whether the run still holds the device lock when the call returns (a failure that left a change for
    the caller's rescue, or an apply a reboot follows).
  returned: always
  type: bool
revert_reboot:
  description: V(verify) - the device reverted the change and reboots (or the connection dropped while it did); wait
    for the device, then run verify again.
  returned: when the device reverted and had not rebooted yet
  type: bool
finished:
  description: The device run ended the run (after snapshot, metrics file, lock given back).
  returned: when a device run ended the run
  type: bool
engine_failed:
  description:
    - Whether the call failed or was refused (set by the action plugin). A caller that registers the result with
      C(failed_when) false, to publish every layer's record before it fails the host, reads the outcome here.
  returned: always
  type: bool
phase:
  description: The phase that ran.
  returned: always
  type: str
rebooted:
  description: The action rebooted the device (O(reboot) given).
  returned: when it rebooted
  type: bool
verify_failed:
  description: With O(reboot), the change was not committed after the reboot (reverted, not in effect, the reboot or
    the device lost) - the caller's rescue restores it.
  returned: when it rebooted
  type: bool
reboot_pending:
  description: With O(rollback) - a restored boot entry takes effect at the next boot (no reboot now).
  returned: with O(rollback)
  type: bool
records:
  description: V(rollback) - each restored layer's record (C(rolled_back), C(unchanged) with nothing journaled,
    C(planned) in check mode, C(failed) with C(details.error) and its journal layer kept); the action plugin returns
    them as C(report).
  returned: V(rollback)
  type: dict
reboot_needed:
  description: V(rollback) - a restored boot layer changed extlinux.conf (it takes effect at the next boot).
  returned: V(rollback)
  type: bool
boot_label:
  description: V(rollback) - the entry the restored extlinux.conf boots.
  returned: V(rollback) with a boot layer
  type: str
management:
  description: The management link, C(null) when the play does not arrive over SSH.
  returned: always
  type: dict
  sample: {address: 10.0.0.5, interface: eth0, source: "SSH_CONNECTION of process 812 (sudo)"}
display:
  description: Local graphical user sessions in use (C(checked) false when not probed).
  returned: always
  type: dict
  sample: {checked: true, sessions_in_use: ["Id=c2 Name=nvidia Type=x11 Class=user Remote=no Active=yes Seat=seat0"]}
services:
  description:
    - The services plan (probe) or outcome (apply) - C(units), C(absent), C(kept), C(stopped), C(stopped_with),
      C(default_target), C(commands), C(journald), C(changes), C(unit_memory) and C(systemctl_calls).
    - With V(apply) also C(collateral) - every unit active before the batch and not after it settled that the
      request did not name (PartOf=/Requires=/... parts, units seen going down with it), keyed by unit with C(by),
      C(via) and C(state), journaled before the module returns and started again by the rollback after the named
      units (a warning names them); a protected or core unit among them is started again at once and the apply
      fails.
    - With V(apply) also C(record), the layer's report record, and C(snapshots) (before, after).
  returned: when O(services) is given
  type: dict
boot:
  description:
    - The boot layers' plan (probe) or outcome (apply) - C(layers), C(device), C(boot_space), C(extlinux) (summary,
      stock_default, changed, after_summary), C(files), C(changes), C(swiotlb) (pool use, kernel_slots,
      attributed_mb), C(carveouts) (method, targets, paths, dts, base_fdt, kept_overlays), C(signing) (C(secure_boot),
      C(hook), C(active) and the C(files) the signing hook signs; the diff names them too).
    - With V(apply) also C(done) (armed layers, files installed, extlinux_written, the files C(signed), and C(trial)
      with the trial boot's C(id), C(marker) and the C(kexec -l) C(argv)) and C(records), each layer's record.
    - C(trial) - C(mode) (V(kexec) or V(none)), C(reason) (why none), C(kexec_available).
    - C(management) - the management path the checker requires at the next boot (with V(probe), the one V(apply)
      would record) - C(mode) (ssh, pull), C(interface), C(addresses), C(peer) and C(peer_role) (controller,
      gateway), C(ssh_port), C(source); or C(skipped) with the reason.
  returned: when O(boot) is given
  type: dict
stage:
  description: On failure, what failed (C(plan), C(apply), C(input)); C(boot_failed) says it was the boot layers.
  returned: on failure
  type: str
restored:
  description: On a failed V(apply) after the first change, whether everything was restored from the journal.
  returned: on failure after a change
  type: bool
restore_error:
  description: Why the restore failed (the journal is kept).
  returned: when the restore failed
  type: str
deadline:
  description: The run's deadline - C(armed), C(unit) (the timer), C(record), C(program), C(seconds), C(changed) when
    V(apply) or V(verify) armed it; C(armed) false, C(record_removed) and C(error) when the run's end disarmed it.
  returned: when a slim run (O(lock)) armed or disarmed it
  type: dict
sign_warnings:
  description: Under UEFI Secure Boot, the restored files the signing hook could not sign again (their previous
    signature was put back).
  returned: on a failed V(apply) that restored signed boot files
  type: list
  elements: str
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_apply as ba
from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_sign as sg
from ansible_collections.edgeslim.jetson.plugins.module_utils import deadline as dl
from ansible_collections.edgeslim.jetson.plugins.module_utils import devlock
from ansible_collections.edgeslim.jetson.plugins.module_utils import engine_run as er
from ansible_collections.edgeslim.jetson.plugins.module_utils import journald_dropin as dropin
from ansible_collections.edgeslim.jetson.plugins.module_utils import metrics as mt
from ansible_collections.edgeslim.jetson.plugins.module_utils import units_apply as ua
from ansible_collections.edgeslim.jetson.plugins.module_utils.dt_overlay import OverlayError
from ansible_collections.edgeslim.jetson.plugins.module_utils.extlinux import ExtlinuxError
from ansible_collections.edgeslim.jetson.plugins.module_utils.hostguards import (
    graphical_sessions,
    management_link,
    management_path,
)
from ansible_collections.edgeslim.jetson.plugins.module_utils.journal import JournalError
from ansible_collections.edgeslim.jetson.plugins.module_utils.memsnap import (
    SnapshotError,
    boot_identity,
    build_snapshot,
    drop_caches,
    read_meminfo,
    sample_meminfo,
    sampling_options,
    settle,
    units_memory,
    utc_now,
)
from ansible_collections.edgeslim.jetson.plugins.module_utils.report import layer_record, layer_status
from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import UnitsError
from ansible_collections.edgeslim.jetson.plugins.module_utils.units_apply import RunError, Runner, UnitsFailure

LAYER = "services"
JOURNALD_UNIT = "systemd-journald.service"

SERVICES_SPEC = {
    **ua.REQUEST_OPTIONS,
    "selected_blocks": {"type": "list", "elements": "str", "default": []},
    "journald": {"type": "dict", "default": {}},
    "journald_dropin": {"type": "path", "default": "/etc/systemd/journald.conf.d/60-edgeslim.conf"},
    "check_display": {"type": "bool", "default": True},
    "verify_delay": {"type": "float", "default": 1.0},
}
MEASURE_SPEC = {
    **sampling_options(samples=3),
    "settle_timeout": {"type": "float", "default": 30.0},
    "stable_kb": {"type": "int", "default": 2048},
}
LOCK_SPEC = {
    "run_id": {"type": "str", "required": True},
    "path": {"type": "path", "default": devlock.DEFAULT_PATH},
    "ttl": {"type": "int", "default": devlock.DEFAULT_TTL},
    "holder": {"type": "dict", "default": {}},
    "wait": {"type": "float", "default": 10},
}
METRICS_SPEC = {
    "path": {"type": "path", "default": mt.DEFAULT_PATH},
    "playbook": {"type": "str", "default": "slim", "choices": list(mt.PLAYBOOKS)},
    "version": {"type": "str", "required": True},
    "drift_check": {"type": "bool", "default": True},
    "journal_path": {"type": "path", "default": "/var/lib/edgeslim/journal.json"},
    "records": {"type": "dict", "default": {}},
    "result": {"type": "str", "default": "failed", "choices": list(mt.RESULTS)},
}
ARGUMENT_SPEC = {
    "phase": {"type": "str", "required": True, "choices": ["probe", "apply", "verify", "finish", "rollback"]},
    "lock": {"type": "dict", "options": LOCK_SPEC},
    "take_lock": {"type": "bool", "default": False},
    "finish": {"type": "str", "default": "no", "choices": ["no", "yes", "if_unchanged"]},
    "preflight": {"type": "dict", "options": er.PREFLIGHT_OPTIONS},
    "report": {"type": "bool", "default": False},
    "metrics": {"type": "dict", "options": METRICS_SPEC},
    "wait": {"type": "dict", "options": er.WAIT_OPTIONS},
    "records": {"type": "dict"},
    "profile": {"type": "dict"},
    "rollback": {"type": "list", "elements": "str", "choices": ["services", "swiotlb", "carveouts"]},
    "running_label": {"type": "str"},
    "reboot": {"type": "dict", "options": er.REBOOT_OPTIONS},
    "services": {"type": "dict", "options": SERVICES_SPEC},
    "journal_path": {"type": "path", "default": "/var/lib/edgeslim/journal.json"},
    "management_interface": {"type": "str"},
    "measure": {"type": "dict", "options": MEASURE_SPEC, "default": {}},
    "layers": {
        "type": "list",
        "elements": "str",
        "choices": ["services", "swiotlb", "carveouts"],
        "default": ["services"],
    },
    "boot": {"type": "dict", "options": ba.BOOT_OPTIONS},
    "before": {"type": "dict", "default": {}},
    "deadline": {"type": "int", "default": dl.DEFAULT_SECONDS},
    "deadline_program_path": {"type": "path", "default": dl.PROGRAM_PATH},
}


class EngineFailure(Exception):
    def __init__(self, msg: str, stage: str, **extra: Any) -> None:
        super().__init__(msg)
        self.msg, self.stage, self.extra = msg, stage, extra


def check_input(p: dict[str, Any]) -> None:
    """Bad input is refused before anything is read or changed."""
    if any(p[k] is not None for k in ("profile", "records", "rollback", "running_label", "reboot")):
        raise EngineFailure("profile, records, rollback, running_label and reboot are resolved on the controller: run "
                            "edgeslim.jetson.engine as a task", "input")  # fmt: skip
    if p["deadline"] < 0:
        raise EngineFailure(f"deadline must be >= 0 seconds (0: none), got {p['deadline']}", "input")
    m = p["measure"]
    if m["samples"] < 1:
        raise EngineFailure(f"measure.samples must be >= 1, got {m['samples']}", "input")
    for key in ("interval", "settle_timeout", "stable_kb"):
        if m[key] < 0:
            raise EngineFailure(f"measure.{key} must be >= 0, got {m[key]}", "input")
    s = p["services"]
    if s is not None:
        if s["verify_delay"] < 0:
            raise EngineFailure(f"services.verify_delay must be >= 0, got {s['verify_delay']}", "input")
        try:
            dropin.render(s["journald"])
        except dropin.DropinError as exc:
            raise EngineFailure(f"services.journald: {exc}", "input") from exc
    if p["phase"] == "rollback":
        # Nothing is applied: only what the restore uses is checked.
        refused = sg.check_command(p["boot"]["sign_command"]) if p["boot"] is not None else None
        if refused or (p["boot"] is None and set(p["layers"]) & set(ba.LAYERS)):
            raise EngineFailure(refused or "boot: the paths of the boot layers to roll back are required", "input")
    elif p["boot"] is not None:
        try:
            ba.check_boot_input(p["boot"])
        except ba.BootFailure as exc:
            raise EngineFailure(exc.msg, exc.stage, boot_failed=True) from exc


def units_request(s: dict[str, Any], interface: str | None) -> ua.UnitsRequest:
    try:
        return ua.UnitsRequest.from_params(s, interface)
    except UnitsError as exc:
        raise EngineFailure(str(exc), "input") from exc


def journald_plan(s: dict[str, Any]) -> dict[str, Any]:
    path = s["journald_dropin"]
    if not s["journald"]:
        return {"path": path, "requested": False, "changed": False, "before": None, "after": None}
    try:
        before = dropin.current(path)
    except dropin.DropinError as exc:
        raise EngineFailure(str(exc), "plan") from exc
    after = dropin.render(s["journald"])
    return {"path": path, "requested": True, "changed": before != after, "before": before, "after": after}


def plan_services(
    module: AnsibleModule, runner: Runner, s: dict[str, Any], interface: str | None
) -> tuple[Any, dict[str, Any]]:
    """The unit plan (refusals raise, stage ``plan``) plus the journald drop-in change."""
    req = units_request(s, interface)
    try:
        plan, result = ua.plan_units(runner, req)
    except UnitsFailure as exc:
        raise EngineFailure(exc.msg, "plan", **exc.extra) from exc
    except (RunError, UnitsError) as exc:
        raise EngineFailure(f"cannot read unit states: {exc}", "plan") from exc
    result["journald"] = journald_plan(s)
    result["changes"] = plan.changes or result["journald"]["changed"]
    return plan, result


def attributed(units: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {n: units[n] for n in names if n in units and units[n]["memory_kb"] > 0}


def mb(kb: float) -> float:
    return round(kb / 1024.0, 1)


def probe(module: AnsibleModule, runner: Runner) -> dict[str, Any]:
    p = module.params
    out: dict[str, Any] = {"phase": "probe", "changed": False, "diff": []}
    if p["preflight"] is not None:
        try:
            out["preflight"] = er.preflight(p["preflight"])
        except er.PreflightRefused as exc:
            raise EngineFailure(exc.msg, "preflight", preflight=exc.info) from exc
        out["preflight"]["boot_layers_refused"] = ""
        sign = p["boot"]["sign_command"] if p["boot"] is not None else p["preflight"]["sign_command"]
        if sign is not None and not sign and out["preflight"]["secure_boot"] is True:
            # The boot layers are skipped with this reason; the other layers run.
            out["preflight"]["boot_layers_refused"] = er.PREFLIGHT_SECURE_BOOT
            p["boot"] = None
    if p["report"]:
        try:
            out["report"] = {"before": er.brief(er.report_snapshot(module, p["measure"]))}
        except SnapshotError as exc:
            raise EngineFailure(f"baseline snapshot: {exc}; nothing changed", "plan") from exc
    link = management_link(module, p["management_interface"])
    s = p["services"]
    out["management"] = link
    out["display"] = {"checked": False, "sessions_in_use": []}
    if s is not None:
        if s["check_display"]:
            out["display"] = {"checked": True, "sessions_in_use": graphical_sessions(module)}
        _plan, result = plan_services(module, runner, s, (link or {}).get("interface"))
        try:
            memory, _missing = units_memory(module, result["stopped"] + list(result["stopped_with"]))
        except SnapshotError as exc:
            raise EngineFailure(str(exc), "plan") from exc
        result["unit_memory"] = memory
        result["systemctl_calls"] = runner.calls
        out["services"] = result
        out["diff"] = services_diff(result)
    if p["boot"] is not None:
        plan = plan_boot(p)
        out["boot"] = ba.public(plan)
        # what apply will record for the checker (the path the controller reaches the device on)
        out["boot"]["management"] = management_path(module, p["management_interface"])
        out["diff"].extend(ba.extlinux_diff(plan))
    out["unchanged"] = not (out.get("services") or {}).get("changes") and not (out.get("boot") or {}).get("changes")
    return out


def plan_boot(p: dict[str, Any], **extra: Any) -> dict[str, Any]:
    try:
        return ba.plan_boot(p["boot"], p["journal_path"])
    except (ba.BootFailure, OSError) as exc:
        msg, stage = (exc.msg, exc.stage) if isinstance(exc, ba.BootFailure) else (str(exc), "plan")
        raise EngineFailure(msg, stage, boot_failed=True, **extra) from exc


def services_diff(result: dict[str, Any]) -> list[dict[str, str]]:
    diffs = [result.pop("diff")]
    j = result["journald"]
    if j["changed"]:
        diffs.append(
            {"before": j["before"] or "", "after": j["after"], "before_header": j["path"], "after_header": j["path"]}
        )
    return diffs


def unchanged_record(s: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    details = {
        "blocks": s["selected_blocks"],
        "absent": result["absent"],
        "kept": result["kept"],
        "default_target": result["default_target"],
    }
    return layer_status(LAYER, "unchanged", **details)


def snapshot(module: AnsibleModule, m: dict[str, Any], readings: list, units: list[str], settled: float) -> dict:
    memory, missing = units_memory(module, units)
    now = utc_now()
    return build_snapshot(readings, now, boot_identity(module, m["boot_id_command"]), memory, missing, settled, False)


def apply(module: AnsibleModule, runner: Runner) -> dict[str, Any]:
    p = module.params
    out: dict[str, Any] = {"phase": "apply", "changed": False, "management": None, "diff": []}
    out["display"] = {"checked": False, "sessions_in_use": []}
    if p["services"] is not None:
        apply_services(module, runner, out)
    if p["boot"] is not None:
        apply_boot(module, runner, out)
    return out


def apply_services(module: AnsibleModule, runner: Runner, out: dict[str, Any]) -> None:
    p = module.params
    s, m = p["services"], p["measure"]
    link = management_link(module, p["management_interface"])
    out["management"] = link
    plan, result = plan_services(module, runner, s, (link or {}).get("interface"))
    out["services"] = result
    out["diff"] = services_diff(result)
    if not result["changes"]:
        result["record"] = unchanged_record(s, result)
        return
    if module.check_mode:
        return
    j = result["journald"]
    try:
        if m["drop_caches"]:
            drop_caches(module)
        about_to_stop = result["stopped"] + list(result["stopped_with"])
        before = snapshot(module, m, sample_meminfo(m["meminfo_path"], m["samples"], m["interval"]), about_to_stop, 0)
    except SnapshotError as exc:
        raise EngineFailure(f"before snapshot: {exc}; nothing changed", "apply") from exc
    extra = {"journald_dropin": {"path": j["path"], "previous": j["before"]}} if j["changed"] else None
    try:
        ua.journal_plan(module, runner, plan, p["journal_path"], LAYER, extra)
    except UnitsFailure as exc:
        raise EngineFailure(exc.msg, "apply", **exc.extra) from exc
    # From here on the host changes: any error restores the journal before failing. The deadline is armed before
    # the first change: a controller that vanishes from here on leaves a device that restores itself.
    try:
        arm_deadline(module, out, services=True)
        if plan.changes:
            ua.run_plan(runner, plan, result, p["journal_path"], LAYER, s["verify_delay"])
        if j["changed"]:
            dropin.write(j["path"], j["after"], replace=module.atomic_move)
            runner.run([runner.systemctl, "restart", JOURNALD_UNIT])
        if m["drop_caches"]:
            drop_caches(module)
        readings, settled = settle(
            lambda: read_meminfo(m["meminfo_path"]), m["settle_timeout"], m["interval"], m["stable_kb"], m["samples"]
        )
        after = snapshot(module, m, readings, [], settled["seconds"])
    except (UnitsFailure, RunError, UnitsError, SnapshotError, dropin.DropinError, dl.DeadlineError, OSError) as exc:
        failed = exc.extra if isinstance(exc, UnitsFailure) else {}
        msg = exc.msg if isinstance(exc, UnitsFailure) else str(exc)
        undo = rollback(module, runner, p["journal_path"])
        raise EngineFailure(msg, "apply", **{**failed, **undo, "changed": True}) from exc
    result["systemctl_calls"] = runner.calls
    result["snapshots"] = {"before": before, "after": after}
    result["record"] = applied_record(s, result, before, after, settled)
    out["changed"] = True


def apply_boot(module: AnsibleModule, runner: Runner, out: dict[str, Any]) -> None:
    """The boot layers after the services (a failure here restores the boot layers only; the services layer's
    outcome is returned with it, as the layer ran and kept its change)."""
    p = module.params
    b = p["boot"]
    # The services layer ran before (and keeps its change): a boot failure returns its outcome and says it changed.
    kept: dict[str, Any] = {"services": out["services"], "changed": out["changed"]} if "services" in out else {}
    plan = plan_boot(p, **kept)
    out["boot"] = ba.public(plan)
    out["diff"].extend(ba.extlinux_diff(plan))
    if not plan["changes"]:
        out["boot"]["records"] = {layer: ba.plan_record("unchanged", plan, layer) for layer in plan["layers"]}
        return
    if module.check_mode:
        out["boot"]["records"] = {
            layer: ba.plan_record("planned" if layer in plan["changed_layers"] else "unchanged", plan, layer)
            for layer in plan["layers"]
        }
        return

    def run(args: list[str], check: bool) -> tuple[int, str, str]:
        try:
            return runner.run([runner.systemctl, *args], check=check)
        except RunError as exc:
            raise ba.RunFailed(str(exc)) from exc

    try:
        out["boot"]["snapshot"] = memtotal_snapshot(module)
        if "swiotlb" in plan:
            out["boot"]["snapshot"]["swiotlb_previous_slots"] = plan["swiotlb"]["previous_slots"]
    except SnapshotError as exc:
        raise EngineFailure(f"before snapshot: {exc}; nothing changed", "apply", boot_failed=True, **kept) from exc
    management = management_path(module, p["management_interface"])
    out["boot"]["management"] = management
    try:
        done = ba.apply_boot(b, p["journal_path"], plan, module.atomic_move, module.warn, run, management,
                             journaled=lambda: arm_boot_deadline(module, out, plan["changed_layers"]),
                             command=module.run_command)  # fmt: skip
    except ba.BootFailure as exc:
        extra = {**kept, **exc.extra, "changed": bool(exc.extra.get("changed") or out["changed"])}
        raise EngineFailure(exc.msg, exc.stage, boot_failed=True, **extra) from exc
    out["boot"]["done"] = done
    out["boot"]["records"] = {
        layer: ba.plan_record("staged" if layer in plan["changed_layers"] else "unchanged", plan, layer)
        for layer in plan["layers"]
    }
    out["changed"] = True


def memtotal_snapshot(module: AnsibleModule) -> dict[str, Any]:
    """MemTotal and the boot identity: the boot layers show in MemTotal after the reboot, not in MemAvailable."""
    m = module.params["measure"]
    return {
        "memtotal_kb": read_meminfo(m["meminfo_path"])["MemTotal"],
        "boot_id": boot_identity(module, m["boot_id_command"]),
        "taken": utc_now(),
    }


def verify(module: AnsibleModule, lock: devlock.DeviceLock | None = None) -> dict[str, Any]:
    """After the reboot: each boot layer's verdict, what the running kernel shows, MemTotal -> its record. With
    ``wait``, first the checker's verdict (and, when it reverted, its revert reboot) in this process, then the lock
    (``take_lock``)."""
    p = module.params
    b, before = p["boot"], p["before"]
    if b is None or not isinstance(before.get("memtotal_kb"), int) or not before.get("boot_id"):
        raise EngineFailure("verify needs boot and before (memtotal_kb, boot_id) from the apply run", "input")
    w = p["wait"]
    if w is not None:
        verdict, pending = er.wait_verdict(
            lambda: ba.read_verdict(b, w["layer"]),
            lambda: boot_identity(module, p["measure"]["boot_id_command"]),
            w["timeout"],
            w["interval"],
        )
        if pending:
            # The checker reverted and reboots the device: the caller waits for it, then verifies again.
            return {"phase": "verify", "changed": False, "revert_reboot": True, "verdict": verdict, "boot": {}}
        if lock is not None and p["take_lock"]:
            take_lock(lock)
    else:
        verdict = None
    try:
        after = memtotal_snapshot(module)
    except SnapshotError as exc:
        raise EngineFailure(f"after snapshot: {exc}", "verify") from exc
    layers = ba.selected(b)
    rc, log, _err = module.run_command(["dmesg"]) if "swiotlb" in layers else (1, "", "")
    delta_mb = round((after["memtotal_kb"] - before["memtotal_kb"]) / 1024.0, 1)
    rebooted = after["boot_id"] != before["boot_id"]
    out: dict[str, Any] = {"phase": "verify", "changed": False, "boot": {"after": after, "records": {}}}
    if verdict is not None:
        out["verdict"] = verdict
    claimed = 0.0
    for layer in layers:
        verdict = ba.read_verdict(b, layer)
        if layer == "swiotlb":
            seen, problems = ba.verify_swiotlb(b, log if rc == 0 else None)
        else:
            seen, problems = ba.verify_carveouts(b)
        if not rebooted:
            problems.append("boot identity did not change: the device did not reboot")
        status = ba.verify_status(verdict, problems)
        details = {"verdict": verdict, "seen": seen, "verification": problems, "shared_boot": len(layers) > 1,
                   "memtotal_before_kb": before["memtotal_kb"], "memtotal_after_kb": after["memtotal_kb"]}  # fmt: skip
        reclaimed = None
        attributed = None
        measured = status == "applied" or (status == "unverified_container" and b["measure_in_container"])
        if measured:
            if layer == "swiotlb":
                use = seen["use"]
                previous = before.get("swiotlb_previous_slots") or ba.DEFAULT_SWIOTLB_SLOTS
                attributed = round((previous - use["expected_slots"]) * ba.SLOT_COST_BYTES / 1048576, 1)
                # Booted with carveouts: SWIOTLB claims at most its formula share of the one MemTotal delta.
                reclaimed = min(delta_mb, attributed) if len(layers) > 1 else delta_mb
                claimed = reclaimed
            else:
                reclaimed = round(delta_mb - claimed, 1)
        out["boot"]["records"][layer] = layer_record(status, "MemTotal", details, reclaimed, attributed)
    return out


def applied_record(
    s: dict[str, Any], result: dict[str, Any], before: dict, after: dict, settled: dict[str, Any]
) -> dict[str, Any]:
    """The layer's report record (docs/report.md, layer ``services``)."""
    taken = attributed(before["units"], result["stopped"])
    with_it = attributed(before["units"], list(result["stopped_with"]))
    delta = after["meminfo_kb"]["MemAvailable"] - before["meminfo_kb"]["MemAvailable"]
    return layer_record(
        "applied",
        "MemAvailable",
        reclaimed_mb=mb(delta),
        attributed_mb=mb(sum(u["memory_kb"] for u in taken.values())),
        details={
            "check_mode": False,
            "blocks": s["selected_blocks"],
            "units": result["units"],
            "stopped": result["stopped"],
            # went down through Requires=/Requisite=/BindsTo= of a planned unit: measured apart, not attributed
            "stopped_with": result["stopped_with"],
            "stopped_with_mb": mb(sum(u["memory_kb"] for u in with_it.values())),
            # every unit the batch took down without the request naming it (journaled; rollback starts them last)
            "collateral": result.get("collateral", {}),
            "absent": result["absent"],
            "kept": result["kept"],
            "default_target": result["default_target"],
            "attribution_mb": {n: mb(u["memory_kb"]) for n, u in taken.items()},
            "unit_memory": taken,
            "boot_id": after["boot_id"],
            "systemctl_calls": result["systemctl_calls"],
            "settle": settled,
        },
    )


def rollback(module: AnsibleModule, runner: Runner, journal_path: str) -> dict[str, Any]:
    """The services layer back from the journal (units_apply.rollback_services; the deadline restore runs the same)."""
    return ua.rollback_services(module, runner, journal_path, LAYER)


RESTORE_ERRORS = (dl.DeadlineError, sg.SignError, JournalError, ExtlinuxError, OverlayError, OSError)


def restore_layers(module: AnsibleModule, runner: Runner) -> dict[str, Any]:
    """The ``rollback`` phase: the boot layers (carveouts, then SWIOTLB: the restore the deadline runs, signing
    strict), then the services layer, each from its journal record. A layer that fails is recorded as failed with its
    error (its journal layer kept); the others still run."""
    p = module.params
    check = module.check_mode
    out: dict[str, Any] = {"phase": "rollback", "changed": False, "diff": [], "records": {}}
    records = out["records"]
    for layer in ("carveouts", "swiotlb"):
        if layer not in p["layers"]:
            continue
        try:
            res = dl.restore_boot_layer(module, p["boot"], p["journal_path"], layer, check_mode=check, strict_sign=True)
        except RESTORE_ERRORS as exc:
            msg = getattr(exc, "msg", None) or str(exc)
            records[layer] = layer_status(layer, "failed", changed=False, error=f"{msg}; the journal layer is kept")
            continue
        status = ("planned" if check else "rolled_back") if res["journaled"] else "unchanged"
        # check mode: the files a restore would remove, under their own key
        removed = {"would_remove" if check else "removed": res["removed"]}
        records[layer] = layer_status(layer, status, changed=res["journaled"], extlinux_changed=res["changed"],
                                      default_label=res["default_label"], **removed)  # fmt: skip
        out["boot_label"] = res["default_label"]
        out["changed"] = out["changed"] or res["journaled"]
        if res.get("diff"):
            out["diff"].append(res["diff"])
    if "services" in p["layers"]:
        records[LAYER] = restore_services(module, runner, p["journal_path"], out)
    out["reboot_needed"] = any(
        (records.get(layer) or {}).get("details", {}).get("extlinux_changed") for layer in ("carveouts", "swiotlb")
    )
    return out


def restore_services(module: AnsibleModule, runner: Runner, journal_path: str, out: dict[str, Any]) -> dict[str, Any]:
    """The services layer's part of ``rollback``: units, default target and the journald drop-in (check mode: the
    plan of the unit restore)."""
    if module.check_mode:
        try:
            res = ua.restore_units(module, runner, journal_path, LAYER, True)
        except ua.UnitsFailure as exc:
            return layer_status(LAYER, "failed", changed=False, error=exc.msg)
        out["changed"] = out["changed"] or res["restored"]
        if res.get("diff"):
            out["diff"].append(res["diff"])
        return layer_status(LAYER, "planned" if res["restored"] else "unchanged", changed=res["restored"],
                            units=res["units"], default_target=res["default_target"])  # fmt: skip
    res = rollback(module, runner, journal_path)
    if not res["restored"]:
        return layer_status(LAYER, "failed", changed=False, error=f"{res['restore_error']}; the journal layer is kept")
    done = bool(res["layer_restored"] or res["journald_restored"])
    out["changed"] = out["changed"] or done
    if res.get("diff"):
        out["diff"].append(res["diff"])
    details = {k: res[k] for k in ("units", "default_target", "restarted_dependencies", "collateral",
                                   "collateral_failed", "journald_restored") if k in res}  # fmt: skip
    for key in ("journal_warning", "collateral_warning", "restore_warning"):
        if res.get(key):
            details[key] = res[key]
    return layer_status(LAYER, "rolled_back" if done else "unchanged", changed=done, **details)


# ---- the run around the layers: lock, report snapshots, metrics file ---------------------------------------------
KEPT_STATUSES = ("applied", "unverified_container", "pending_reboot", "staged")
FINE_AFTER_REBOOT = ("applied", "unverified_container")


def device_lock(module: AnsibleModule) -> devlock.DeviceLock | None:
    lk = module.params["lock"]
    if lk is None:
        return None
    try:
        # run bookkeeping, not a device change: taken and released in check mode too (as the slim flow always did)
        return devlock.DeviceLock(module, lk["path"], lk["run_id"], lk["ttl"], lk["holder"], lk["wait"], False)
    except devlock.LockError as exc:
        raise EngineFailure(exc.msg, "input", **exc.extra) from exc


def take_lock(lock: devlock.DeviceLock) -> dict[str, Any]:
    try:
        return lock.acquire()
    except devlock.LockError as exc:
        raise EngineFailure(exc.msg, "lock", lock={"held": False, **exc.extra}) from exc


def this_run_records(result: dict[str, Any]) -> dict[str, Any]:
    """The layer records this run produced; a boot layer staged by an apply that finishes the run waits for a
    reboot that this run does not make (pending_reboot)."""
    records: dict[str, Any] = {}
    if (result.get("services") or {}).get("record"):
        records["services"] = result["services"]["record"]
    for layer, rec in ((result.get("boot") or {}).get("records") or {}).items():
        records[layer] = {**rec, "status": "pending_reboot"} if rec["status"] == "staged" else rec
    return records


def write_metrics(module: AnsibleModule, result: str, records: dict[str, Any]) -> dict[str, Any] | None:
    """The node_exporter file (module_utils/metrics.py), from every record of the run; never fails the run: a file that
    cannot be written is a warning, as in the metrics role."""
    mp = module.params["metrics"]
    if mp is None:
        return None
    known = {**(mp["records"] or {}), **records}
    summary = {k: {"status": v.get("status"), "reclaimed_mb": v.get("reclaimed_mb")} for k, v in known.items()
               if isinstance(v, dict)}  # fmt: skip
    try:
        out = mt.write_textfile(module, {**mp, "result": result, "layers": mt.layer_figures(mp["playbook"], summary),
                                         "carveouts_drift": None, "timestamp": None}, module.check_mode)  # fmt: skip
    except (mt.MetricsError, ValueError, TypeError) as exc:
        module.warn(f"edgeslim metrics file not written: {exc}")
        return {"written": False, "msg": str(exc)}
    for warning in out["warnings_list"]:
        module.warn(warning)
    out.pop("diff")
    return out


def arm_deadline(module: AnsibleModule, out: dict[str, Any], services: bool = False,
                 boot_layers: list[str] | None = None) -> None:  # fmt: skip
    """Arm the run's deadline (module_utils/deadline.py) - a slim run (O(lock)) with O(deadline) > 0, not in check
    mode. ``services``/``boot_layers``: the layers this apply is about to change (added to the record); neither
    (verify) arms again from the record apply wrote. Raises DeadlineError."""
    p = module.params
    if p["lock"] is None or p["deadline"] == 0 or module.check_mode:
        return
    record = None
    if services or boot_layers:
        metrics = None
        if p["metrics"] is not None:
            metrics = {k: v for k, v in p["metrics"].items() if k not in ("records", "result")}
        record = dl.new_record(p["lock"]["run_id"], p["journal_path"], p["lock"]["path"], p["deadline"], services,
                               p["boot"], boot_layers or [], metrics)  # fmt: skip
    out["deadline"] = dl.arm(module, p["lock"]["run_id"], p["deadline"], p["journal_path"],
                             p["deadline_program_path"], record)  # fmt: skip


def arm_boot_deadline(module: AnsibleModule, out: dict[str, Any], layers: list[str]) -> None:
    """apply_boot's hook after the boot layers' journal: a failure to arm restores them like any other error."""
    try:
        arm_deadline(module, out, boot_layers=layers)
    except (dl.DeadlineError, OSError) as exc:
        raise ba.BootFailure(f"deadline: {exc}", "apply") from exc


def release_lock(module: AnsibleModule, lock: devlock.DeviceLock, result: dict[str, Any]) -> None:
    """The run ends on the device: its deadline disarmed, then the lock given back (deadline.release_lock, the same
    step as edgeslim.jetson.device_lock's release). Raises LockError; ``result["deadline"]`` is set either way."""
    try:
        released = dl.release_lock(module, lock, module.params["journal_path"])
    except devlock.LockError as exc:
        keep_deadline(result, exc.extra.pop("deadline", None))
        raise
    keep_deadline(result, released.pop("deadline"))
    result["lock"] = released


def keep_deadline(result: dict[str, Any], deadline: dict[str, Any] | None) -> None:
    if deadline is not None and "skipped" not in deadline:
        result["deadline"] = deadline


def finish(module: AnsibleModule, lock: devlock.DeviceLock | None, result: dict[str, Any]) -> None:
    """The end of the run on the device: the after snapshot, the metrics file, the lock given back."""
    p = module.params
    if p["report"]:
        after = ((result.get("services") or {}).get("snapshots") or {}).get("after")
        if result["phase"] == "probe":
            after_brief = (result.get("report") or {}).get("before")
        else:
            try:
                after_brief = er.brief(after or er.report_snapshot(module, p["measure"]))
            except SnapshotError as exc:
                module.warn(f"after snapshot: {exc}")
                after_brief = None
        result.setdefault("report", {})["after"] = after_brief
    result["metrics"] = write_metrics(module, "ok", this_run_records(result))
    if lock is not None:
        try:
            release_lock(module, lock, result)
        except devlock.LockError as exc:
            module.warn(f"device lock not released: {exc.msg}")
            result["lock"] = {"held": True, "unit": lock.unit}
    result["finished"] = True


def finishes(p: dict[str, Any], result: dict[str, Any]) -> bool:
    if p["finish"] == "if_unchanged":
        return bool(result.get("unchanged"))
    if p["finish"] != "yes" or result.get("revert_reboot"):
        return False
    records = ((result.get("boot") or {}).get("records") or {}) if result["phase"] == "verify" else {}
    return all(rec["status"] in FINE_AFTER_REBOOT for rec in records.values())


def failure_keeps_lock(extra: dict[str, Any]) -> bool:
    """A failed apply that kept a change of this run (the services layer ran, then a boot layer failed and restored
    itself only) leaves the lock held: the caller's rescue restores the rest under it and gives it back."""
    services = (extra.get("services") or {}).get("record") or {}
    return services.get("status") in KEPT_STATUSES


def failure_records(p: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The layers a failed apply restored (the failing one: the boot layers, or the services layer): rolled back."""
    if not extra.get("restored"):
        return {}
    layers = ba.selected(p["boot"]) if extra.get("boot_failed") and p["boot"] is not None else ["services"]
    return {layer: {"status": "rolled_back", "reclaimed_mb": None} for layer in layers}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    runner = Runner(module, module.get_bin_path("systemctl", required=True))
    lock = None
    taken = False
    try:
        check_input(p)
        lock = device_lock(module)
        # verify waits for the checker's verdict first: a device that reverts reboots under this run (the lock would
        # be taken in a boot that ends); the lock is taken in the boot the run verifies.
        if lock is not None and p["take_lock"] and not (p["phase"] == "verify" and p["wait"] is not None):
            taken = take_lock(lock)["held"]
        if p["phase"] == "finish":
            result = {"phase": "finish", "changed": False}
        elif p["phase"] == "rollback":
            result = restore_layers(module, runner)
        elif p["phase"] == "verify":
            result = verify(module, lock)
            taken = lock is not None and p["take_lock"] and not result.get("revert_reboot")
        else:
            result = apply(module, runner) if p["phase"] == "apply" else probe(module, runner)
        if lock is not None and taken:
            result["lock"] = {"held": True, "unit": lock.unit}
        if p["phase"] == "finish":
            result["metrics"] = write_metrics(module, p["metrics"]["result"] if p["metrics"] else "failed", {})
            if lock is not None:
                release_lock(module, lock, result)
            result["finished"] = True
        elif finishes(p, result):
            finish(module, lock, result)
        elif p["phase"] == "verify" and taken:
            # The run goes on after this verify in the new boot (the reboot ended the deadline apply armed): armed
            # again from apply's record until the run ends.
            arm_deadline(module, result)
    except EngineFailure as exc:
        extra = dict(exc.extra)
        extra.setdefault("changed", False)
        extra.setdefault("systemctl_calls", runner.calls)
        extra.setdefault("commands", runner.ran)
        if lock is not None and exc.stage != "lock" and p["phase"] != "finish":
            if failure_keeps_lock(extra):
                extra["lock"] = {"held": True, "unit": lock.unit}
            else:
                # Any other failure ends the run here: the metrics file says so and the lock is given back.
                extra["metrics"] = write_metrics(module, "rolled_back" if extra.get("restored") else "failed",
                                                 failure_records(p, extra))  # fmt: skip
                try:
                    release_lock(module, lock, extra)
                except devlock.LockError as rel:
                    extra["lock"] = {"held": True, "unit": lock.unit, "error": rel.msg}
                extra["finished"] = True
        module.fail_json(msg=exc.msg, phase=p["phase"], stage=exc.stage, **extra)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
