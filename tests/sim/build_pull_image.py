"""Build the simulated pull device's image: the simulated Jetson plus git and ansible-core, cached by a recipe hash.

    python tests/sim/build_pull_image.py            # build if missing, print the tag
    python tests/sim/build_pull_image.py --print-tag

The same rootfs as tests/sim/build_image.py (its debootstrap base with git added, its layer), and ansible-core from
pull/requirements.txt installed offline, by pip run from its wheel, into the JetPack 7 (R38) interpreter, Python
3.12: ansible-core 2.19's controller side needs 3.11+, which no older JetPack Python is. The wheelhouse is
downloaded once by the host's pyenv build of that Python (matching its ABI) and cached by the file's hash. The tag
hashes the simulated Jetson's tag and this recipe, so either changing rebuilds. A separate image so that the other
scenarios' image (and its tag) do not change. See docs/gitops.md and extensions/molecule/pull.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import build_image as bi

HERE = Path(__file__).resolve().parent
IMAGE_REPO = f"{bi.IMAGE_REPO}-pull"
# git: ansible-pull's checkout, and `git daemon` serving the test repository on the device's loopback. Under
# ansible-pull the device is the controller: dtc (device-tree-compiler, with fdtoverlay) and cpp compile the carveouts
# overlay there, as meta/bindep.txt asks of a controller's execution environment.
PACKAGES = ["git", "device-tree-compiler", "cpp"]
REQUIREMENTS = HERE / "pull" / "requirements.txt"
DEV_REQUIREMENTS = HERE.parents[1] / "requirements-dev.txt"
PYTHON = "3.12"


def recipe_hash() -> str:
    h = hashlib.sha256(bi.recipe_hash().encode())
    h.update(" ".join([*PACKAGES, PYTHON]).encode())
    bi.hash_files(h, [Path(__file__), REQUIREMENTS], HERE)
    return h.hexdigest()[:12]


def image_tag() -> str:
    return f"{IMAGE_REPO}:{recipe_hash()}"


def pinned(path: Path, name: str) -> str | None:
    """The version of ``name`` pinned (``name==version``) in a requirements file, or None."""
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec.lower().startswith(f"{name.lower()}=="):
            return spec.split("==", 1)[1].strip()
    return None


def requirements() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def interpreter() -> str:
    """The exact version of the pull device's interpreter (image/pythons.txt)."""
    versions = [v for v in bi.jetpack_pythons() if bi.minor(v) == PYTHON]
    if not versions:
        sys.exit(f"build-pull-image: the pull device runs Python {PYTHON}, which is not in {bi.PYTHONS_FILE}")
    return versions[0]


def check_pins() -> None:
    dev, pull = pinned(DEV_REQUIREMENTS, "ansible-core"), pinned(REQUIREMENTS, "ansible-core")
    if not pull or dev != pull:
        sys.exit(f"build-pull-image: ansible-core {pull} in {REQUIREMENTS} is not the {dev} of {DEV_REQUIREMENTS}")
    if not pinned(REQUIREMENTS, "pip"):
        sys.exit(f"build-pull-image: {REQUIREMENTS} pins no pip (the device's Python has none)")


def base_tarball() -> Path:
    """The simulated Jetson's debootstrap base with PACKAGES added, once per package list (like build_image's)."""
    packages = [*bi.PACKAGES, *PACKAGES]
    key = hashlib.sha256(" ".join([bi.SUITE, bi.MIRROR, *packages]).encode()).hexdigest()[:12]
    tar = bi.CACHE / f"base-{bi.SUITE}-{key}.tar"
    if tar.exists():
        bi.log(f"reusing debootstrap base {tar.name}")
        return tar
    bi.CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bi.CACHE, prefix="debootstrap-") as tmp:
        root = Path(tmp) / "rootfs"
        bi.log(f"debootstrap {bi.SUITE} ({len(packages)} extra packages) ...")
        bi.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(packages), bi.SUITE, str(root),
                bi.MIRROR], stdout=subprocess.DEVNULL)  # fmt: skip
        for sub in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/locale"):
            shutil.rmtree(root / sub, ignore_errors=True)
            (root / sub).mkdir(parents=True, exist_ok=True)
        bi.run(["tar", "-C", str(root), "-cf", str(tar) + ".part", "."])
        os.replace(str(tar) + ".part", tar)
    return tar


def wheelhouse() -> Path:
    """The wheels of pull/requirements.txt for the device's Python, cached by that file's hash (offline builds)."""
    key = hashlib.sha256(PYTHON.encode() + REQUIREMENTS.read_bytes()).hexdigest()[:12]
    out = bi.CACHE / f"wheelhouse-py{PYTHON}-{key}"
    if out.is_dir():
        bi.log(f"reusing {out.name}")
        return out
    bi.CACHE.mkdir(parents=True, exist_ok=True)
    version = interpreter()
    exe = bi.pyenv_root() / "versions" / version / "bin" / f"python{PYTHON}"
    tmp = Path(tempfile.mkdtemp(dir=bi.CACHE, prefix="wheelhouse-"))
    try:
        bi.log(f"downloading the wheels of {REQUIREMENTS.name} for Python {version} ...")
        bi.run([str(exe), "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
                "-r", str(REQUIREMENTS), "-d", str(tmp)])  # fmt: skip
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def install_ansible(root: Path) -> str:
    """ansible-core into the device's interpreter as `pip install ansible-core` would put it there, offline; its
    commands linked into /usr/local/bin (ansible-pull runs the ansible-playbook found next to itself)."""
    wheels = wheelhouse()
    stage = root / "tmp/edgeslim-wheelhouse"
    shutil.copytree(wheels, stage)
    pip = sorted(stage.glob("pip-*.whl"))
    if not pip:
        sys.exit(f"build-pull-image: no pip wheel in {wheels}")
    wanted = [r for r in requirements() if not r.lower().startswith("pip==")]
    bi.run(["chroot", str(root), f"/usr/bin/python{PYTHON}", f"/tmp/edgeslim-wheelhouse/{pip[0].name}/pip",
            "install", "--quiet", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
            "--root-user-action=ignore", "--find-links", "/tmp/edgeslim-wheelhouse", *wanted])  # fmt: skip
    shutil.rmtree(stage)
    bindir = root / bi.JETPACK_PYTHON_DIR / PYTHON / "bin"
    for cmd in sorted(bindir.glob("ansible*")):
        (root / "usr/local/bin" / cmd.name).symlink_to(f"/{bi.JETPACK_PYTHON_DIR}/{PYTHON}/bin/{cmd.name}")
    version = subprocess.run(["chroot", str(root), "/usr/local/bin/ansible-pull", "--version"], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
    return version.splitlines()[0]


def build(tag: str) -> None:
    base = base_tarball()
    with tempfile.TemporaryDirectory(dir=bi.CACHE, prefix="image-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        bi.run(["tar", "-C", str(root), "-xf", str(base)])
        bi.customise(root)
        bi.log(f"pull device: {install_ansible(root)}, Python {interpreter()}")
        bi.import_rootfs(root, tag)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--print-tag", action="store_true", help="print the tag this recipe builds and exit")
    ap.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    args = ap.parse_args()
    check_pins()
    tag = image_tag()
    if args.print_tag:
        print(tag)
        return 0
    if bi.image_exists(tag) and not args.force:
        bi.log(f"cached {tag}")
        print(tag)
        return 0
    if os.geteuid() != 0:
        print("build-pull-image: debootstrap and chroot need root", file=sys.stderr)
        return 1
    missing = bi.missing_pythons()
    if missing:
        print("build-pull-image: missing on this host:", *missing, sep="\n  ", file=sys.stderr)
        return 1
    build(tag)
    bi.log(f"built {tag}")
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
