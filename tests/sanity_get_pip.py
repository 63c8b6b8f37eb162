"""Stand-in for ansible-test's get-pip bootstrap script, which it downloads from a host we cannot reach.

ansible-test runs this file as ``__main__`` with pip-install style arguments (``pip==X setuptools==Y ...`` plus
get-pip's own ``--no-setuptools``/``--no-wheel``). We bootstrap pip from the interpreter's bundled ``ensurepip``
and then let that pip install the exact pinned packages from the package index. tests/sanity.sh copies this file to
``~/.ansible/test/cache/get_pip_<version>.py``.
"""

import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
    subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)


if __name__ == "__main__":
    main()
