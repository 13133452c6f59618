"""The documentation stays true to the repository.

- every relative link and image in README.md, docs/*.md and weights/README.md resolves to a file
  or folder of the repository, and every ``#anchor`` into a Markdown file names one of its headings
  (GitHub's heading ids);
- every ``csd-sr <subcommand>`` and its ``--flags`` in a code span or block exist in the real
  parser (``csd_sr.cli.build_parser``), every ``python -m bench.X --flag`` exists in ``bench/X.py``'s
  argparse calls, every ``scripts/X.sh`` or ``bench/X.py`` named exists (``scripts/`` holds the set-up
  shell scripts alone), and a code span that is only a flag (``--steps 100``) is a flag of one of them;
- every ``CSD_SR_*`` name the docs mention is a field of ``service.settings.Settings``, and every
  field is documented in docs/api.md or docs/deployment.md;
- every docs page starts with a title and a sentence saying what it is for, and README.md links it.
"""

from __future__ import annotations

import argparse
import ast
import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "docs"
DOC_FILES = [REPO / "README.md", *sorted(DOCS_DIR.glob("*.md")), REPO / "weights" / "README.md"]
SETTINGS_DOCS = [DOCS_DIR / "api.md", DOCS_DIR / "deployment.md"]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HTML_REF = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...
ENV_NAME = re.compile(r"\bCSD_SR_[A-Z0-9_]*[A-Z0-9]\b")
SEPARATORS = re.compile(r"\s(?:&&|\|\||;|\||#)\s|#\s")
NOT_OUR_COMMAND = {"docker", "kubectl", "kustomize", "helm", "curl"}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# --- Markdown, just enough of it -------------------------------------------------------------------


def split_fences(text: str) -> tuple[list[str], list[str]]:
    """(prose lines with fenced blocks blanked, the fenced blocks' contents)."""
    prose, blocks, block, fence = [], [], [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence, block = match.group(1), []
            prose.append("")
        elif fence is not None and line.strip().startswith(fence):
            blocks.append("\n".join(block))
            fence = None
            prose.append("")
        elif fence is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    return prose, blocks


@cache
def parsed(path: Path) -> tuple[str, list[str], list[str]]:
    """(prose without code, inline code spans, fenced code blocks) of one Markdown file."""
    prose_lines, blocks = split_fences(path.read_text())
    spans: list[str] = []
    paragraphs = []
    for paragraph in "\n".join(prose_lines).split("\n\n"):  # a span never crosses a blank line
        spans += [m.group(2).replace("\n", " ").strip() for m in CODE_SPAN.finditer(paragraph)]
        paragraphs.append(CODE_SPAN.sub("code", paragraph))
    return "\n\n".join(paragraphs), spans, blocks


def heading_ids(path: Path) -> set[str]:
    """GitHub's ids of a file's headings: lower case, punctuation dropped, spaces to hyphens, -N for repeats."""
    prose_lines, _ = split_fences(path.read_text())
    ids: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines:
        match = HEADING.match(line)
        if not match:
            continue
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))  # a link shows its text
        slug = re.sub(r"[^\w\- ]", "", text.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def link_targets(path: Path) -> list[str]:
    prose, _, _ = parsed(path)
    return LINK.findall(prose) + REF_DEF.findall(prose) + HTML_REF.findall(prose)


def code_lines(path: Path) -> list[str]:
    """Every line of code the file shows: code spans, and block lines with backslash continuations joined."""
    _, spans, blocks = parsed(path)
    lines = list(spans)
    for block in blocks:
        lines += re.sub(r"\\\n\s*", " ", block).splitlines()
    return lines


# --- what exists ----------------------------------------------------------------------------------


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


@cache
def csd_sr_commands() -> tuple[set[str], dict[str, set[str]]]:
    """(top-level options, subcommand -> its options) of the real ``csd-sr`` parser."""
    from csd_sr.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return options_of(parser), {name: options_of(p) for name, p in subs.choices.items()}


@cache
def script_options(script: Path) -> set[str]:
    """The option strings of a script's ``add_argument`` calls, read from its source (nothing is run)."""
    options = {"-h", "--help"}
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")]
            options.update(flags)
            if any(k.arg == "action" and "BooleanOptional" in ast.unparse(k.value) for k in node.keywords):
                options.update("--no-" + f[2:] for f in flags if f.startswith("--"))
    return options


def flags_in(tokens: list[str]) -> list[str]:
    """``--flag`` tokens (``--flag=value`` and ``[--flag`` included), without their values."""
    found = []
    for token in tokens:
        match = re.match(r"^[\[(]*(--[A-Za-z0-9][\w-]*)", token)
        if match:
            found.append(match.group(1))
    return found


def commands_in(line: str) -> list[tuple[str, str | None, list[str]]]:
    """``(program, subcommand or None, flags)`` per csd-sr, bench or scripts command on a line of code.

    ``program`` is ``csd-sr`` or a file such as ``bench/png.py`` (from ``python -m bench.png``) or
    ``scripts/serve.sh``; commands of other programs (docker, kubectl, curl, ...) are left alone, as are
    comments that name no command.
    """
    found = []
    for segment in SEPARATORS.split(f" {line} "):
        tokens = segment.split()
        if not tokens or tokens[0] in NOT_OUR_COMMAND:
            continue
        for i, token in enumerate(tokens):
            rest = tokens[i + 1 :]
            is_module = token == "-m" and rest[:1] in (["csd_sr"], ["csd_sr.cli"])
            if token == "csd-sr" or token.endswith("bin/csd-sr") or is_module:
                rest = rest[1:] if is_module else rest
                sub = rest[0].strip("[]()`,.:") if rest and re.match(r"^[\[(]?[a-z]", rest[0]) else None
                found.append(("csd-sr", sub, flags_in(rest[1:] if sub else rest)))
                break
            bench = re.fullmatch(r"bench\.(\w+)", rest[0]) if token == "-m" and rest else None
            if bench:
                found.append((f"bench/{bench.group(1)}.py", None, flags_in(rest[1:])))
                break
            if re.fullmatch(r"(scripts|bench)/[\w-]+\.(py|sh)", token):
                found.append((token, None, flags_in(rest) if token.endswith(".py") else []))
                break
    return found


# --- the checks -----------------------------------------------------------------------------------


def test_doc_files_exist() -> None:
    missing = [rel(p) for p in DOC_FILES if not p.is_file()]
    names = {p.name for p in DOCS_DIR.glob("*.md")}
    expected = {"api.md", "policy.md", "models.md", "deployment.md", "benchmarks.md", "training.md"}
    assert not missing and expected <= names, f"missing documentation files: {missing or sorted(expected - names)}"


def test_links_and_images_resolve() -> None:
    problems = []
    for doc in DOC_FILES:
        for target in link_targets(doc):
            if EXTERNAL.match(target):
                continue
            path_part, _, anchor = unquote(target).partition("#")
            dest = (doc.parent / path_part).resolve() if path_part else doc
            where = f"{rel(doc)}: ({target})"
            if not dest.is_relative_to(REPO):
                problems.append(f"{where} points outside the repository")
            elif not dest.exists():
                problems.append(f"{where}: no such file or folder {dest.relative_to(REPO)}")
            elif anchor and dest.suffix == ".md" and anchor not in heading_ids(dest):
                problems.append(f"{where}: no heading #{anchor} in {rel(dest)}")
    assert not problems, "broken links or images:\n" + "\n".join(problems)


def test_commands_and_flags_exist() -> None:
    top, subs = csd_sr_commands()
    all_flags = top.union(*subs.values())
    for script in (REPO / "bench").glob("*.py"):
        all_flags |= script_options(script)
    problems = []
    for doc in DOC_FILES:
        for line in code_lines(doc):
            where = f"{rel(doc)}: `{line.strip()}`"
            for program, sub, flags in commands_in(line):
                if program == "csd-sr":
                    if sub is not None and sub not in subs:
                        problems.append(f"{where}: no subcommand `csd-sr {sub}` (there are: {', '.join(subs)})")
                        continue
                    known, name = (subs[sub], f"csd-sr {sub}") if sub else (top, "csd-sr")
                elif not (REPO / program).is_file():
                    problems.append(f"{where}: no such script {program}")
                    continue
                else:
                    known, name = (script_options(REPO / program), program) if program.endswith(".py") else (set(), "")
                problems += [f"{where}: `{name}` has no option {flag}" for flag in flags if flag not in known]
            if line.startswith("--") and not commands_in(line):  # a flag on its own, e.g. `--steps 100`
                problems += [
                    f"{where}: {flag} is an option of no csd-sr subcommand and no bench module"
                    for flag in flags_in(line.split()[:1])
                    if flag not in all_flags
                ]
    assert not problems, "commands or options that do not exist:\n" + "\n".join(problems)


def test_settings_match_the_docs() -> None:
    from service.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    settings = {prefix + name.upper() for name in Settings.model_fields}
    mentioned = {name: rel(doc) for doc in DOC_FILES for name in ENV_NAME.findall(doc.read_text())}
    unknown = sorted(f"{name} ({where})" for name, where in mentioned.items() if name not in settings)
    documented = {name for doc in SETTINGS_DOCS for name in ENV_NAME.findall(doc.read_text())}
    undocumented = sorted(settings - documented)
    assert not unknown, f"the docs name settings that service/settings.py does not have: {unknown}"
    assert not undocumented, (
        f"settings of service/settings.py documented in neither docs/api.md nor docs/deployment.md: {undocumented}"
    )


def test_pages_say_what_they_are_for_and_readme_links_them() -> None:
    problems = []
    readme_targets = {unquote(t).partition("#")[0] for t in link_targets(REPO / "README.md")}
    for page in sorted(DOCS_DIR.glob("*.md")):
        lines = [line for line in split_fences(page.read_text())[0] if line.strip()]
        if not lines or not lines[0].startswith("# "):
            problems.append(f"{rel(page)}: does not start with a '# Title'")
        elif len(lines) < 2 or re.match(r"^\s*(#|\||!\[|[-*] |```)", lines[1]):
            problems.append(f"{rel(page)}: the title is not followed by a sentence saying what the page is for")
        if f"docs/{page.name}" not in readme_targets:
            problems.append(f"{rel(page)}: README.md does not link it")
    assert not problems, "\n".join(problems)
