"""One way to run an Ansible module's main() in a test and read its JSON result."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


def run_module(
    main: Callable[[], None],
    args: dict[str, Any],
    *,
    check: bool = False,
    diff: bool = False,
    run_command: Callable[[list[str]], tuple[int, str, str]] | None = None,
    bin_path: str | None = None,
) -> dict[str, Any]:
    """Run ``main`` with ``args``; ``run_command(argv)`` fakes AnsibleModule.run_command, ``bin_path`` get_bin_path."""
    args = {**args, "_ansible_check_mode": check, "_ansible_diff": diff}
    patches = [patch_module_args(args), mock.patch("sys.stdout.write")]
    if run_command is not None:
        patches.append(mock.patch.object(basic.AnsibleModule, "run_command", lambda _s, argv, **_k: run_command(argv)))
    if bin_path is not None:
        patches.append(mock.patch.object(basic.AnsibleModule, "get_bin_path", lambda *_a, **_k: bin_path))
    with patches[0], patches[1] as write, pytest.raises(SystemExit):
        for extra in patches[2:]:
            extra.start()
        try:
            main()
        finally:
            for extra in patches[2:]:
                extra.stop()
    return json.loads("".join(c.args[0] for c in write.call_args_list))
