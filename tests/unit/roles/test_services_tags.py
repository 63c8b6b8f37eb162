"""The services role tags every profile block that carries units, so `--tags <block>` can select it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_every_block_with_units_has_a_tag():
    tasks = yaml.safe_load((ROOT / "roles/services/tasks/main.yml").read_text())
    tags = set(tasks[0]["tags"])
    assert "services" in tags
    for path in sorted((ROOT / "profiles/blocks").glob("*.yml")):
        block = yaml.safe_load(path.read_text())
        if (block.get("services") or {}).get("units") or block.get("journald"):
            assert path.stem in tags, f"add tag {path.stem!r} to roles/services/tasks/main.yml"


def test_argument_specs_match_defaults():
    specs = yaml.safe_load((ROOT / "roles/services/meta/argument_specs.yml").read_text())["argument_specs"]
    defaults = yaml.safe_load((ROOT / "roles/services/defaults/main.yml").read_text())
    options = specs["main"]["options"]
    assert set(options) == set(defaults)
    for name, value in defaults.items():
        assert options[name]["default"] == value, name
