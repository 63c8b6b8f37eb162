#!/usr/bin/env bash
# make publish-check: what a Galaxy / Automation Hub maintainer runs on the collection (docs/publishing.md).
# Tools live in their own venv (.cache/publish-venv): galaxy-importer brings an ansible-core and ansible-lint of its
# own, which must not change .venv. Output under build/publish/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REQ=tests/requirements-publish.txt
PVENV=${EDGESLIM_PUBLISH_VENV:-$ROOT/.cache/publish-venv}
OUT=$ROOT/build/publish
PY=${PYTHON:-python3}

stamp=$(sha256sum "$REQ" | cut -c1-16)
if [[ ! -f $PVENV/.stamp-$stamp ]]; then
  echo "publish-check: installing $REQ into $PVENV"
  rm -rf "$PVENV"
  "$PY" -m venv "$PVENV"
  "$PVENV/bin/pip" install --quiet --upgrade pip
  "$PVENV/bin/pip" install --quiet -r "$REQ"
  touch "$PVENV/.stamp-$stamp"
fi
# The publish venv's ansible-* first, and Ansible's defaults instead of the testbed's ansible.cfg (its
# collections_path resolves the checkout, which would hide what the tarball really holds).
export PATH=$PVENV/bin:$PATH
rm -rf "$OUT" && mkdir -p "$OUT"
: >"$OUT/ansible.cfg"
export ANSIBLE_CONFIG=$OUT/ansible.cfg
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS

fail() { echo "publish-check: FAILED: $*" >&2; exit 1; }

echo "== changelog"
antsibull-changelog lint || fail "antsibull-changelog lint"
antsibull-changelog generate --output "$OUT/CHANGELOG.md" --output-format md >/dev/null
diff -u CHANGELOG.md "$OUT/CHANGELOG.md" ||
  fail "CHANGELOG.md is generated: add a fragment to changelogs/fragments/ and run antsibull-changelog generate"

echo "== docs site sources"
python tests/publish/docs_rst.py --check || fail "docs/docsite/rst/ is stale"

echo "== build"
version=$(python -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["version"])')
tarball=$OUT/edgeslim-jetson-$version.tar.gz
ansible-galaxy collection build --force --output-path "$OUT" >/dev/null
tar tzf "$tarball" | sort >"$OUT/tarball.txt"
echo "$(wc -l <"$OUT/tarball.txt") entries in $tarball (list: $OUT/tarball.txt)"
# Testbed and local files that must never ship.
if grep -E '^(ansible\.cfg|slim\.yml|inventories/sim|tests/|extensions/|bench/|build/|reports/|\.venv|\.cache|\.collections|collections/|playbooks/collections|changelogs/\.plugin-cache|importer_result)' \
  "$OUT/tarball.txt"; then
  fail "testbed or local files in the tarball (build_ignore in galaxy.yml)"
fi
for must in README.md LICENSE CHANGELOG.md changelogs/changelog.yaml docs/docsite/extra-docs.yml meta/runtime.yml; do
  grep -qx "$must" "$OUT/tarball.txt" || fail "$must missing from the tarball"
done

echo "== galaxy-importer"
mkdir -p "$OUT/importer"
(cd "$OUT/importer" && GALAXY_IMPORTER_CONFIG=$ROOT/tests/publish/galaxy-importer.cfg \
  python -m galaxy_importer.main "$tarball") >"$OUT/galaxy-importer.log" 2>&1 || {
  cat "$OUT/galaxy-importer.log"
  fail "galaxy-importer"
}
# The importer passes with lint findings; a publisher wants none.
if grep -E '^(ERROR|WARNING):' "$OUT/galaxy-importer.log"; then
  fail "galaxy-importer reported the findings above ($OUT/galaxy-importer.log)"
fi
tail -1 "$OUT/galaxy-importer.log"

echo "== antsibull-docs"
# Lint and build from the installed tarball: the docs a user of the published collection gets. Installed outside
# the repository: inside a git work tree antsibull-docs copies only the files git tracks, i.e. none under build/.
collections=$(mktemp -d "${TMPDIR:-/tmp}/edgeslim-publish.XXXXXX")
trap 'rm -rf "$collections"' EXIT
export ANSIBLE_COLLECTIONS_PATH=$collections
ansible-galaxy collection install --force "$tarball" -p "$collections" >/dev/null
installed=$collections/ansible_collections/edgeslim/jetson
# lint-collection-docs reads galaxy.yml; the installed copy carries MANIFEST.json.
cp galaxy.yml "$installed/galaxy.yml"
antsibull-docs lint-collection-docs --plugin-docs --check-extra-docs-refs --validate-collection-refs self \
  "$installed" || fail "antsibull-docs lint-collection-docs"
mkdir -m 755 "$OUT/site"
antsibull-docs sphinx-init --use-current --fail-on-error --dest-dir "$OUT/site" edgeslim.jetson >/dev/null
# The steps of the build.sh that sphinx-init writes, with Sphinx's warnings kept in a file.
(cd "$OUT/site" && mkdir -p -m 755 rst &&
  antsibull-docs --config-file antsibull-docs.cfg collection --cleanup everything --fail-on-error --use-current \
    --dest-dir rst edgeslim.jetson >/dev/null &&
  sphinx-build -M html rst build -c . -q --keep-going -w warnings.log >/dev/null 2>&1) ||
  { cat "$OUT/site/warnings.log" 2>/dev/null || true; fail "docs site build"; }
# Any warning fails, except, when Ansible's own docs inventory (intersphinx) cannot be fetched, the references into
# it that the generated plugin pages always carry.
allowed='^$'
if grep -q 'docs.ansible.com.*not fetchable' "$OUT/site/warnings.log"; then
  allowed="failed to reach any of the inventories|undefined label: '(common_return_values|callback_plugins|action_plugins|ansible_configuration_settings|ansible_collections\.ansible\.builtin\.[a-z_]+)'"
fi
if grep 'WARNING' "$OUT/site/warnings.log" | grep -Ev "$allowed"; then
  fail "docs site warnings ($OUT/site/warnings.log)"
fi
echo "docs site: $OUT/site/build/html/index.html"

if grep -q 'edgeslim-placeholder-org' galaxy.yml; then
  echo "publish-check: note: galaxy.yml still names the placeholder organisation (docs/publishing.md)"
fi
echo "publish-check: OK"
