"""Render docs/*.md as the collection's extra docs (docs/docsite/rst/*.rst) for antsibull-docs.

antsibull-docs only reads reStructuredText extra docs; the Markdown in docs/ stays the source. Pandoc (pinned through
pypandoc-binary in tests/requirements-publish.txt, so the output is reproducible) converts each page; links between
pages become :ref: labels, links to other repository files become literals. Each page must be listed in
docs/docsite/extra-docs.yml.

    python tests/publish/docs_rst.py          # rewrite docs/docsite/rst/
    python tests/publish/docs_rst.py --check  # fail when it is stale (make publish-check)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import pypandoc
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RST_DIR = DOCS / "docsite" / "rst"
EXTRA_DOCS = DOCS / "docsite" / "extra-docs.yml"
LABEL_PREFIX = "ansible_collections.edgeslim.jetson.docsite."

# Links are rewritten inside pandoc (a Lua filter), so grid tables are laid out around the final text.
LINK_FILTER = r"""
local pages = {%(pages)s}
local prefix = "%(prefix)s"
function Link(el)
  local target = el.target
  if target:match("^%%a[%%w+.-]*:") then return nil end
  local path = target:match("^([^#]*)")
  local text = pandoc.utils.stringify(el.content)
  if path == "" then return el.content end  -- a heading of the same page: keep the words
  local stem = path:match("^([%%w_-]+)%%.md$")
  if stem and pages[stem] then
    local label = prefix .. stem:gsub("-", "_")
    -- Link text that is just the file name shows the page's title instead.
    if text == path then return pandoc.RawInline("rst", ":ref:`" .. label .. "`") end
    return pandoc.RawInline("rst", ":ref:`" .. text .. " <" .. label .. ">`")
  end
  -- A repository file outside the docs site (examples, sources): name it, do not link it.
  if text == path or text == path:match("([^/]+)$") then return pandoc.Code("docs/" .. path) end
  return {pandoc.Str(text .. " "), pandoc.Code("(docs/" .. path .. ")")}
end
-- Pictures stay in the repository (docs/images/): the docs site names them.
function Image(el)
  local text = pandoc.utils.stringify(el.caption)
  return {pandoc.Str(text .. " "), pandoc.Code("(docs/" .. el.src .. ")")}
end
"""


def label(stem: str) -> str:
    return LABEL_PREFIX + stem.replace("-", "_")


# A fenced block's language is kept only when the block parses as that language: the docs use ```yaml / ```json
# for schemas too ({size_mib: int} | null), which rstcheck and Sphinx's highlighter refuse.
FENCE = re.compile(r"^```(yaml|json)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
PARSERS = {"yaml": lambda text: list(yaml.safe_load_all(text)), "json": json.loads}


def plain_if_invalid(match: re.Match) -> str:
    language, code = match.group(1), match.group(2)
    try:
        PARSERS[language](code)
    except Exception:
        return "```text\n" + code + "```"
    return match.group(0)


def render(md: Path, lua: Path) -> str:
    source = FENCE.sub(plain_if_invalid, md.read_text(encoding="utf-8"))
    # No heading identifiers: pandoc would write them as labels, and the docs site only allows ours.
    body = pypandoc.convert_text(
        source, "rst", format="gfm-gfm_auto_identifiers", extra_args=["--wrap=preserve", f"--lua-filter={lua}"]
    )
    header = (
        f".. Generated from docs/{md.name} by tests/publish/docs_rst.py: edit the Markdown, then run it.\n\n"
        f".. _{label(md.stem)}:\n\n"
    )
    return header + body.rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/docsite/rst/ is not up to date")
    args = parser.parse_args()

    pages = sorted(DOCS.glob("*.md"))
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "links.lua"
        table = ", ".join(f'["{md.stem}"] = true' for md in pages)
        lua.write_text(LINK_FILTER % {"pages": table, "prefix": LABEL_PREFIX}, encoding="utf-8")
        wanted = {md.stem + ".rst": render(md, lua) for md in pages}
    problems = []
    for name, text in wanted.items():
        out = RST_DIR / name
        if out.is_file() and out.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            problems.append(f"stale or missing: {out.relative_to(ROOT)}")
        else:
            RST_DIR.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
    for old in sorted(RST_DIR.glob("*.rst")) if RST_DIR.is_dir() else []:
        if old.name not in wanted:
            if args.check:
                problems.append(f"no docs/{old.stem}.md for {old.relative_to(ROOT)}")
            else:
                old.unlink()

    index = yaml.safe_load(EXTRA_DOCS.read_text(encoding="utf-8")) if EXTRA_DOCS.is_file() else {}
    listed = {
        entry if isinstance(entry, str) else entry.get("ref")
        for section in (index or {}).get("sections") or []
        for entry in section.get("toctree") or []
    }
    for name in wanted:
        if Path(name).stem not in listed:
            problems.append(f"docs/{Path(name).stem}.md is not listed in {EXTRA_DOCS.relative_to(ROOT)}")

    for problem in problems:
        print(f"docs site: {problem}", file=sys.stderr)
    if problems and args.check:
        print("run: .cache/publish-venv/bin/python tests/publish/docs_rst.py", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
