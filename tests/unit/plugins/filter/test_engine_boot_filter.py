"""engine_boot: the roles' own inputs (rendered from their defaults like Ansible would) give one engine boot option
that the device module's argument spec accepts; layers that disagree on the shared entry are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible_collections.edgeslim.jetson.plugins.filter.engine_boot import FilterModule, engine_boot
from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_apply

ROLES = Path(__file__).resolve().parents[4] / "roles"


def trusted(value):
    """Files Ansible loads from a role are trusted templates (ansible-core 2.19 templates nothing else)."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return value


def role_facts(layer: str, **overrides) -> dict:
    """The facts the role's tasks_from inputs sets, rendered by Ansible's own templar with the role's defaults."""
    defaults = trusted(yaml.safe_load((ROLES / layer / "defaults" / "main.yml").read_text()))
    task = yaml.safe_load((ROLES / layer / "tasks" / "inputs.yml").read_text())[0]
    templar = Templar(loader=DataLoader(), variables={**defaults, "edgeslim_reboot_ok": True, **overrides})
    return templar.template(trusted(task["ansible.builtin.set_fact"]))


@pytest.fixture
def parts():
    swiotlb, carveouts = role_facts("swiotlb", swiotlb_size_mib=4), role_facts("carveouts")
    return {"swiotlb": swiotlb, "carveouts": carveouts}


def test_the_roles_inputs_make_one_boot_option_the_module_accepts(parts):
    settings = {**parts["swiotlb"]["swiotlb_inputs"], **parts["carveouts"]["carveouts_inputs"]}
    boot_parts = {layer: facts[f"{layer}_boot"] for layer, facts in parts.items()}
    out = engine_boot(["carveouts", "services", "swiotlb"], boot_parts, settings)
    assert out["layers"] == ["swiotlb", "carveouts"]  # the documented order, whatever the caller's
    boot = out["boot"]
    assert boot["extlinux_path"] == "/boot/extlinux/extlinux.conf" and boot["managed_label"] == "edgeslim"
    assert boot["swiotlb"] == {"debugfs_path": "/sys/kernel/debug/swiotlb", "max_boots": 3}
    assert boot["carveouts"]["overlay_path"] == "/boot/edgeslim/carveouts.dtbo" and "fdt" not in boot["carveouts"]
    assert boot["checks"] == {}  # no health check configured: none passed (the layer's own checks still run)
    assert out["journal_path"] == "/var/lib/edgeslim/journal.json" and out["reboot_timeout"] == 900
    # What the action plugin passes on (controller-only keys dropped) validates against the module's spec.
    module_boot = {k: v for k, v in boot.items() if k not in ("settings", "checks")}
    module_boot["swiotlb"] = {**boot["swiotlb"], "slots": 2048}
    module_boot["carveouts"] = {k: v for k, v in boot["carveouts"].items() if k not in ("dtc", "fdtoverlay")}
    module_boot["carveouts"]["recipes"] = ["headless"]
    module_boot["checker"] = {"program": "x", "unit": "y"}
    result = ArgumentSpecValidator(boot_apply.BOOT_OPTIONS).validate(module_boot)
    assert result.error_messages == []


def test_health_checks_and_boot_identity_are_carried(parts):
    swiotlb = role_facts("swiotlb", swiotlb_size_mib=4, swiotlb_health_units_active=["ssh.service"],
                         swiotlb_boot_id_command=["cat", "/run/boot"])["swiotlb_boot"]  # fmt: skip
    out = engine_boot(["swiotlb"], {"swiotlb": swiotlb}, {})
    assert out["boot"]["checks"] == {"swiotlb": {"units_active": ["ssh.service"]}}
    assert out["boot"]["checker"] == {"boot_id_command": ["cat", "/run/boot"]}
    assert out["boot_id_command"] == ["cat", "/run/boot"] and "carveouts" not in out["boot"]
    assert "sign_command" not in out["boot"]  # no hook configured: the engine refuses a Secure Boot device
    hook = ["/usr/local/bin/sign", "{file}"]
    signed = role_facts("carveouts", edgeslim_secure_boot_sign_command=hook)["carveouts_boot"]
    assert engine_boot(["carveouts"], {"carveouts": signed}, {})["boot"]["sign_command"] == hook


@pytest.mark.parametrize("key", ["extlinux_path", "managed_label", "journal_path"])
def test_layers_that_disagree_on_the_shared_entry_are_refused(parts, key):
    boot_parts = {layer: facts[f"{layer}_boot"] for layer, facts in parts.items()}
    boot_parts["carveouts"] = {**boot_parts["carveouts"], key: "/elsewhere"}
    with pytest.raises(AnsibleFilterError, match=f"their {key} differ"):
        engine_boot(["swiotlb", "carveouts"], boot_parts, {})
    assert engine_boot(["carveouts"], boot_parts, {})["boot"]  # alone, it is its own entry


def test_compiling_on_the_device_is_refused(parts):
    carveouts = {**parts["carveouts"]["carveouts_boot"], "compile_on": "device"}
    with pytest.raises(AnsibleFilterError, match="compiled on the controller"):
        engine_boot(["carveouts"], {"carveouts": carveouts}, {})


def test_no_boot_layer_and_bad_arguments():
    assert engine_boot(["services"], {}, {})["boot"] == {}
    with pytest.raises(AnsibleFilterError, match="tasks_from: inputs"):
        engine_boot(["swiotlb"], {}, {})
    with pytest.raises(AnsibleFilterError):
        engine_boot("swiotlb", {}, {})
    assert FilterModule().filters()["engine_boot"] is engine_boot
