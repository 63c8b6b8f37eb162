"""The services role tags every profile block that carries units, so `--tags <block>` can select it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


LAYER_TAGS = {"all", "always", "never", "tagged", "untagged", "services", "swiotlb", "carveouts", "rollback"}


def test_block_names_work_as_tags():
    """Blocks are selected with --tags/--skip-tags <block> (matched against ansible_run_tags/ansible_skip_tags), so
    a block name must be a plain tag that no layer or special tag already uses; the layer's tasks carry only
    `services` and `always` (a per-block task tag would make --skip-tags <block> skip the whole layer)."""
    tasks = yaml.safe_load((ROOT / "roles/services/tasks/main.yml").read_text())
    assert set(tasks[0]["tags"]) == {"services", "always"}
    names = [p.stem for p in sorted((ROOT / "profiles/blocks").glob("*.yml"))]
    assert names
    for name in names:
        assert name.isidentifier() and name.islower(), name
        assert name not in LAYER_TAGS, name


def test_argument_specs_match_defaults():
    specs = yaml.safe_load((ROOT / "roles/services/meta/argument_specs.yml").read_text())["argument_specs"]
    defaults = yaml.safe_load((ROOT / "roles/services/defaults/main.yml").read_text())
    options = specs["main"]["options"]
    assert set(options) == set(defaults)
    for name, value in defaults.items():
        assert options[name]["default"] == value, name
