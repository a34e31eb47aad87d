"""Every relative link and anchor in the repository's Markdown files resolves.

The checker follows GitHub: a link's path is relative to the file it is in (or to the
repository root when it starts with "/") and must name a file or directory of the repository;
an anchor into a Markdown file must be the slug of one of its headings (lowercase, punctuation
other than hyphens, underscores and spaces removed, spaces turned into hyphens, repeated
headings numbered -1, -2, ...) or an explicit HTML id. Links in code are not links.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_NOT_PARAGRAPH = re.compile(r"^\s*(?:$|#|>|\||[-*+][ \t]|\d+[.)][ \t]|```|~~~)")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:[^`\n]|`(?!\1)|\n(?![ \t]*\n))+?)(?<!`)\1(?!`)")
_INLINE_LINK = re.compile(
    r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]"
    r"\([ \t]*\n?[ \t]*(<[^>\n]*>|[^\s()]*)(?:[ \t]+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?[ \t]*\)"
)
_REFERENCE = re.compile(r"^ {0,3}\[(?!\^)[^\]]+\]:[ \t]*(<[^>\n]*>|\S+)", re.MULTILINE)
_HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)[ \t]*=[ \t]*[\"']([^\"']*)[\"']", re.I)
_HTML_ID = re.compile(r"<[a-z][^>]*?\b(?:id|name)[ \t]*=[ \t]*[\"']([^\"']*)[\"']", re.I)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_LINE_ANCHOR = re.compile(r"^L\d+(?:C\d+)?(?:-L\d+(?:C\d+)?)?$")
_MARKDOWN = (".md", ".markdown")


def _blank(match: re.Match[str]) -> str:
    """The match replaced by spaces, newlines kept (so offsets and line numbers survive)."""
    return re.sub(r"[^\n]", " ", match.group(0))


def _without_fences(text: str) -> str:
    """`text` with HTML comments and fenced code blocks blanked out."""
    lines = _COMMENT.sub(_blank, text).split("\n")
    fence = ""
    for i, line in enumerate(lines):
        match = _FENCE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = ""
            lines[i] = ""
        elif match:
            fence = match.group(1)
            lines[i] = ""
    return "\n".join(lines)


def _rendered(text: str) -> str:
    """The text a heading renders to: code spans kept verbatim, links and images as their
    text, HTML tags and emphasis markers dropped."""
    parts = []
    last = 0
    for match in _CODE_SPAN.finditer(text):
        parts.append(_plain(text[last : match.start()]))
        parts.append(match.group(2).strip() if match.group(2).strip() else match.group(2))
        last = match.end()
    parts.append(_plain(text[last:]))
    return "".join(parts)


def _plain(text: str) -> str:
    text = _INLINE_LINK.sub(lambda m: m.group(1), text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"\*+", "", text)
    return re.sub(r"(?<![^\W_])_+|_+(?![^\W_])", "", text)  # emphasis, not snake_case


def slugify(heading: str) -> str:
    """GitHub's anchor for a heading text (github-slugger, before de-duplication)."""
    text = _rendered(heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(text: str) -> list[str]:
    """The heading texts of a Markdown document, in order (ATX and setext)."""
    out = []
    lines = _without_fences(text).split("\n")
    for i, line in enumerate(lines):
        atx = _ATX.match(line)
        if atx:
            out.append(atx.group(1) or "")
        elif (
            _SETEXT.match(line)
            and i > 0
            and not _NOT_PARAGRAPH.match(lines[i - 1])
            and not _ATX.match(lines[i - 1])
        ):
            out.append(lines[i - 1].strip())
    return out


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown document defines: heading slugs, numbered like GitHub's
    (a repeated slug gets -1, -2, ...), and explicit HTML ids and names."""
    occurrences: dict[str, int] = {}
    found = set()
    for heading in headings(text):
        original = slug = slugify(heading)
        while slug in occurrences:
            occurrences[original] += 1
            slug = f"{original}-{occurrences[original]}"
        occurrences[slug] = 0
        found.add(slug)
    found.update(_HTML_ID.findall(_without_fences(text)))
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code, in order."""
    prose = _CODE_SPAN.sub(_blank, _without_fences(text))
    found = []
    for pattern in (_INLINE_LINK, _REFERENCE, _HTML_LINK):
        for match in pattern.finditer(prose):
            group = match.lastindex or 0
            target = match.group(group).strip()
            if target.startswith("<") and target.endswith(">"):
                target = target[1:-1]
            found.append((prose.count("\n", 0, match.start(group)) + 1, target))
    return sorted(found)


def repository_files(root: Path) -> set[str] | None:
    """Paths (POSIX, relative to `root`) of the files git tracks or would track; None
    without git, when the filesystem is all there is."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return {p for p in out.stdout.split("\0") if p and (root / p).exists()}


def markdown_files(root: Path, files: set[str] | None) -> list[Path]:
    """The repository's Markdown files."""
    if files is not None:
        return sorted(root / p for p in files if p.lower().endswith(_MARKDOWN))
    skip = {"results", "logs", ".snakemake", ".venv", "node_modules"}
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in _MARKDOWN
        and not any(part in skip or part.startswith(".") for part in p.relative_to(root).parts)
    )


def check_links(
    root: Path, documents: Iterable[Path], files: set[str] | None
) -> tuple[int, list[str]]:
    """(number of relative links checked, one message per link that does not resolve)."""
    root = root.resolve()
    checked, problems = 0, []
    cache: dict[Path, set[str]] = {}
    for document in documents:
        document = document.resolve()
        for line, target in links(document.read_text(encoding="utf-8")):
            if _SCHEME.match(target) or target.startswith("//"):
                continue
            checked += 1
            where = f"{document.relative_to(root)}:{line}: ({target})"
            path_part, _, anchor = target.partition("#")
            path_part = unquote(path_part)
            if not path_part and not anchor:
                problems.append(f"{where} empty link")
                continue
            if path_part.startswith("/"):
                resolved = (root / path_part.lstrip("/")).resolve()
            else:
                resolved = (document.parent / path_part).resolve() if path_part else document
            try:
                relative = resolved.relative_to(root).as_posix()
            except ValueError:
                problems.append(f"{where} points outside the repository")
                continue
            if files is None:
                exists, is_file = resolved.exists(), resolved.is_file()
            else:
                is_file = relative in files
                exists = (
                    is_file or relative == "." or any(f.startswith(relative + "/") for f in files)
                )
            if not exists:
                problems.append(f"{where} no such file or directory: {relative}")
                continue
            if not anchor:
                continue
            anchor = unquote(anchor)
            if is_file and resolved.suffix.lower() in _MARKDOWN:
                if resolved not in cache:
                    cache[resolved] = anchors(resolved.read_text(encoding="utf-8"))
                if anchor not in cache[resolved]:
                    problems.append(f"{where} no heading or id '{anchor}' in {relative}")
            elif not (is_file and _LINE_ANCHOR.match(anchor)):
                problems.append(f"{where} anchor '{anchor}' into a file that is not Markdown")
    return checked, problems


# --- the repository's documentation ----------------------------------------------------------


@pytest.fixture(scope="module")
def repo() -> tuple[set[str] | None, list[Path]]:
    files = repository_files(ROOT)
    return files, markdown_files(ROOT, files)


def test_every_relative_link_and_anchor_resolves(repo):
    files, documents = repo
    names = {d.relative_to(ROOT).as_posix() for d in documents}
    assert {"README.md", "docs/README.md", "config/README.md"} <= names
    checked, problems = check_links(ROOT, documents, files)
    assert checked >= 50, f"only {checked} relative links found: is the parser broken?"
    assert not problems, "links that do not resolve:\n" + "\n".join(problems)


def test_every_docs_page_is_linked_from_the_index(repo):
    _, documents = repo
    pages = {d.name for d in documents if d.parent == ROOT / "docs"} - {"README.md"}
    index = {t.partition("#")[0] for _, t in links((ROOT / "docs" / "README.md").read_text())}
    readme = {t.partition("#")[0] for _, t in links((ROOT / "README.md").read_text())}
    assert pages, "no pages in docs/"
    assert pages <= index, f"docs/README.md does not link {sorted(pages - index)}"
    assert "docs/README.md" in readme, "README.md does not link the docs index"


def test_readme_is_a_landing_page():
    """Issue 19: the README stays about 8 KB; the rest lives in docs/."""
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 8 * 1024, f"README.md is {size} bytes; move details into docs/"


def test_a_broken_link_in_the_real_docs_is_caught(repo, tmp_path):
    """Mutation check: the same documents, copied, pass; with one file path and one anchor
    broken they fail, naming both."""
    files, documents = repo
    copies = []
    for document in documents:
        copy = tmp_path / document.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(document, copy)
        copies.append(copy)
    known = (
        files
        if files is not None
        else {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file()}
    )
    assert check_links(tmp_path, copies, known)[1] == []

    readme = tmp_path / "README.md"
    text = readme.read_text()
    to_file = next(t for _, t in links(text) if t.startswith("docs/") and "#" not in t)
    to_anchor = next(
        t for copy in copies for _, t in links(copy.read_text()) if "#" in t and "://" not in t
    )
    anchored = next(c for c in copies if to_anchor in c.read_text())
    readme.write_text(text.replace(f"]({to_file})", f"]({to_file[:-3]}-missing.md)", 1))
    anchored.write_text(anchored.read_text().replace(f"({to_anchor})", f"({to_anchor}-missing)", 1))
    _, problems = check_links(tmp_path, copies, known)
    assert any(f"({to_file[:-3]}-missing.md)" in p and "no such file" in p for p in problems)
    assert any(f"({to_anchor}-missing)" in p and "no heading" in p for p in problems)
    assert len(problems) == 2, problems


# --- the checker on small examples ------------------------------------------------------------


@pytest.mark.parametrize(
    "heading,slug",
    [
        ("Set-up", "set-up"),
        ("What you get", "what-you-get"),
        ("Your own data in ten lines of config", "your-own-data-in-ten-lines-of-config"),
        ("`seed`", "seed"),
        ("`algorithm: nuts`", "algorithm-nuts"),
        ("The C++ header", "the-c-header"),
        ("Cluster execution (SLURM)", "cluster-execution-slurm"),
        ("Outputs are whole or absent.", "outputs-are-whole-or-absent"),
        ("max_points and *emphasis* and _more_", "max_points-and-emphasis-and-more"),
        ("`_private` code", "_private-code"),
        ("Two  spaces", "two--spaces"),
        ("Δmean, über", "δmean-über"),
        ("[A link](x.md) here", "a-link-here"),
    ],
)
def test_slug_follows_github(heading, slug):
    assert slugify(heading) == slug


def test_repeated_headings_are_numbered():
    text = "# A\n\n## A\n\nA\n---\n\n## A-1\n\n```\n# not a heading\n```\n\n## B {x}\n"
    assert headings(text) == ["A", "A", "A", "A-1", "B {x}"]
    assert anchors(text) == {"a", "a-1", "a-2", "a-1-1", "b-x"}


def test_checker_reports_exactly_the_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text(
        "# Title\n\n## Same\n\n## Same\n\n<a id='custom'></a>\n"
    )
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "a.md").write_text(
        "# Own heading\n\n"
        "[ok](docs/b.md) [ok](docs/b.md#title) [ok](docs/b.md#same-1) [ok](docs/b.md#custom)\n"
        "[ok](#own-heading) [ok](docs/) [ok](code.py#L1-L2) [ok](https://example.org/x#y)\n"
        '[ok, wrapped\ntext](</docs/b.md>) [ok](docs/b.md "title")\n'
        "[bad](docs/b.md#same-2) [bad](missing.md) [bad](#nope) [bad](../outside.md)\n"
        "![bad image](img.png) [bad](code.py#section)\n\n"
        "`[code](ignored.md)` and\n\n```\n[fenced](ignored.md)\n```\n\n"
        "<!-- [comment](ignored.md) -->\n"
        '<img src="missing.png">\n\n[^1]: a footnote, not a link\n'
        "[ref]: docs/nothing.md\n"
    )
    checked, problems = check_links(tmp_path, [tmp_path / "a.md"], None)
    bad = sorted(p.split(": (", 1)[1].split(")", 1)[0] for p in problems)
    assert bad == sorted(
        [
            "docs/b.md#same-2",
            "missing.md",
            "#nope",
            "../outside.md",
            "img.png",
            "code.py#section",
            "missing.png",
            "docs/nothing.md",
        ]
    )
    assert checked == 17
    assert any(p.startswith("a.md:7: (docs/b.md#same-2)") for p in problems)
