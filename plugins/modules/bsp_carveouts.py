#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: bsp_carveouts
short_description: Apply validated carveout recipes to a Jetson BSP's MB1/MB2 BCT sources
description:
  - Runs on the controller against the operator's C(Linux_for_Tegra) tree (BSP side of the carveouts layer).
  - For the module's chip, appends one managed, delimited override block to the MB1 and MB2 BCT misc DTS files
    that zeroes the recipes' firmware carveouts, switches off the owning clusters' firmware loading
    (C(auxp_controls)) and deletes the address-translation entries (C(auxp_ast_config)) that reference them.
  - Only NVIDIA's validated recipes C(headless) and C(no_camera) exist; anything else is refused.
  - Before writing, the patched files are preprocessed and compiled with C(cpp) and C(dtc) as the flashing tools do,
    and the compiled trees are checked for the intended values. A BSP whose headers do not define a recipe
    carveout, or give it the ID of another carveout, is refused. On any refusal no file changes.
  - The result takes effect only after the boot firmware is re-flashed or updated by capsule; see docs/carveouts.md.
version_added: 0.1.0
author: edgeslim maintainers (@edgeslim)
options:
  bsp_path:
    description: Path of the C(Linux_for_Tegra) directory.
    type: path
    required: true
  module:
    description: Module part number, e.g. C(p3767-0005) (Orin Nano 8GB), C(p3701-0005), C(p3834-0008).
    type: str
    required: true
  recipes:
    description: Recipes to apply. An empty list removes the managed blocks (restores the stock files).
    type: list
    elements: str
    required: true
  include_dirs:
    description:
      - Extra include directories, relative to O(bsp_path), searched after the file's own directory.
    type: list
    elements: str
    default: [bootloader, bootloader/generic/include, bootloader/generic/BCT]
  backup:
    description: Keep a timestamped backup of each file changed.
    type: bool
    default: true
attributes:
  check_mode:
    description: Computes and checks the change without writing.
    support: full
  diff_mode:
    description: Shows the edit of each DTS file.
    support: full
  platform:
    description: Runs on the controller where the BSP lives.
    support: full
    platforms: posix
requirements:
  - cpp (from gcc) and dtc (device-tree-compiler) on the controller
"""

EXAMPLES = r"""
- name: Remove display and camera carveouts from an Orin Nano BSP
  edgeslim.jetson.bsp_carveouts:
    bsp_path: /srv/bsp/r36.4.7/Linux_for_Tegra
    module: p3767-0005
    recipes: [headless, no_camera]
  delegate_to: localhost

- name: Restore the stock BCT files
  edgeslim.jetson.bsp_carveouts:
    bsp_path: /srv/bsp/r36.4.7/Linux_for_Tegra
    module: p3767-0005
    recipes: []
  delegate_to: localhost
"""

RETURN = r"""
chip:
  description: SoC family of the module.
  returned: always
  type: str
  sample: t234
files:
  description: The MB1 and MB2 misc files, whether each changed, and backups.
  returned: always
  type: list
  elements: dict
  sample: [{path: .../tegra234-mb1-bct-misc-p3767-0000.dts, changed: true, backup: ...}]
carveouts:
  description: Carveout macro names zeroed, with the IDs the BSP's headers give them.
  returned: when recipes are given
  type: dict
  sample: {CARVEOUT_DCE: 20}
carveout_aliases:
  description:
    - Other macro names the BSP's headers give the same carveout (C(#define A B) chains), per recipe carveout.
      Zeroing the recipe carveout zeroes them too; they are one carveout, not a conflict.
  returned: when recipes are given
  type: dict
  sample: {CARVEOUT_DISP_EARLY_BOOT_FB: [CARVEOUT_CCPLEX_SMMU_PTW]}
auxp_disabled:
  description: Indices of the auxp_controls clusters switched off.
  returned: when recipes are given
  type: list
  elements: int
ast_deleted:
  description: Indices of the auxp_ast_config entries deleted.
  returned: when recipes are given
  type: list
  elements: int
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import bct
from ansible_collections.edgeslim.jetson.plugins.module_utils.carveout_recipes import (
    RecipeError,
    module_files,
    recipes_for,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "bsp_path": {"type": "path", "required": True},
            "module": {"type": "str", "required": True},
            "recipes": {"type": "list", "elements": "str", "required": True},
            "include_dirs": {
                "type": "list",
                "elements": "str",
                "default": ["bootloader", "bootloader/generic/include", "bootloader/generic/BCT"],
            },
            "backup": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    root = Path(p["bsp_path"])
    try:
        files = module_files(p["module"])
        recipes = recipes_for(files.chip, p["recipes"]) if p["recipes"] else []
    except RecipeError as exc:
        module.fail_json(msg=str(exc))
    bct_dir = root / "bootloader" / "generic" / "BCT"
    mb1, mb2 = bct_dir / files.mb1, bct_dir / files.mb2
    includes = [root / d for d in p["include_dirs"]]
    result: dict = {"changed": False, "chip": files.chip, "files": []}
    try:
        for f in (mb1, mb2):
            if not f.is_file():
                raise bct.BctError(f"BSP file missing for module {p['module']}: {f}")
        if recipes:
            plan = bct.plan(mb1, mb2, recipes, includes)
            targets = [
                (mb1, plan.mb1_text, bct.verify_mb1(plan.carveouts)),
                (mb2, plan.mb2_text, bct.verify_mb2(plan.auxp_disabled, plan.ast_deleted)),
            ]
            result.update(
                carveouts=plan.carveouts,
                carveout_aliases=plan.aliases,
                auxp_disabled=plan.auxp_disabled,
                ast_deleted=plan.ast_deleted,
            )
        else:
            targets = [(f, bct.strip_block(f.read_text()), None) for f in (mb1, mb2)]
        # Check everything before writing anything: a refusal leaves every file untouched.
        for path, text, verify in targets:
            if verify is not None:
                bct.check_patched(path, text, includes, verify)
    except bct.BctError as exc:
        module.fail_json(msg=str(exc), **result)
    diffs = []
    for path, text, _verify in targets:
        before = path.read_text()
        changed = before != text
        entry: dict = {"path": str(path), "changed": changed}
        if changed:
            diffs.append({"before_header": str(path), "after_header": str(path), "before": before, "after": text})
            if not module.check_mode:
                if p["backup"]:
                    entry["backup"] = module.backup_local(str(path))
                tmp = path.with_name(f".{path.name}.edgeslim.tmp")
                tmp.write_text(text)
                module.atomic_move(str(tmp), str(path))
        result["files"].append(entry)
        result["changed"] |= changed
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
