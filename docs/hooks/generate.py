"""MkDocs hook: render the parts of the site that must not drift from the code.

Placeholders (HTML comments, so a page still reads fine on GitHub) are replaced at build time:

- ``<!-- make-targets -->``  the Makefile's targets, from their ``## `` comments, by section;
- ``<!-- cli: server -->``, ``<!-- cli: client -->``, ``<!-- cli: workbook -->``  a flags table and the
  full ``--help`` text, from the module's own argparse parser;
- ``<!-- steps: N -->``  lesson N's steps from ``pcbook.workbook.manifest`` (stack, what it must show, why);
- ``<!-- lessons -->``  a table of every lesson in ``pcbook.workbook.manifest``;
- ``<!-- exercise: N -->``  lesson N's exercise: what to edit, which steps it stands in for, the commands
  (`make check-N CONF=`, `make hint-N`, `make watch-N`, `make progress`) and the starter itself;
- ``<!-- step: N key -->``  a reference to lesson N's step by its key: "step 6 (*its title*)";
  ``<!-- step-no: N key -->`` the number alone ("step 6"), ``<!-- steps: N key key ... -->`` several
  ("steps 7 and 8", "steps 1-4"), ``<!-- checkpoint-steps: N -->`` those `make check-N` replays.
  ``Step``/``Steps`` start a sentence. Prose never types a step's
  number: a step added or moved renumbers every page (tests/docs checks that none is typed).

Strict: a CLI module that cannot be imported, a parser that cannot be found or an unknown lesson
fails the build. (While the CLIs were being written, a missing module rendered a visible note instead;
``PCBOOK_DOCS_SOFT=1`` brings that back for a checkout where one is missing on purpose.)

Diagrams: the pinned mermaid.min.js that `make setup` puts into the virtual environment (see
mermaid_js.py; ``MERMAID_JS=/path/to/mermaid.min.js`` for another) is copied into the site and loaded
before Material's code, so diagrams render without the CDN Material otherwise fetches mermaid from.
"""

from __future__ import annotations

import argparse
import html
import importlib
import logging
import os
import posixpath
import re
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import mermaid_js  # noqa: E402  (this folder: the pinned mermaid)

if TYPE_CHECKING:
    from pcbook.stage.model import Lesson

log = logging.getLogger("mkdocs.hooks.generate")

CLI_MODULES = {
    "server": "pcbook.service.server",
    "client": "pcbook.service.client",
    "workbook": "pcbook.workbook.cli",
    "stream_probe": "pcbook.measure.stream_probe",  # lesson 9's driver
    "load": "pcbook.measure.driver",  # lessons 7 and 8: the load driver
    "bench": "pcbook.bench.__main__",  # lesson 10: `make bench` (python -m pcbook.bench)
    "containers": "pcbook.workbook.deploy.__main__",  # deploy/: the image's entry point and the k8s renderer
    "nginx_sync": "pcbook.discovery.nginx_sync",  # lesson 11: nginx fed by the registry
    "xds": "pcbook.discovery.xds",  # lesson 12: the xDS control plane
}
MERMAID_ASSET = "assets/javascripts/mermaid.min.js"
# Run right after it: mermaid would otherwise render every `pre.mermaid` itself on page load, from the
# fence's HTML (an error diagram), before Material renders it properly.
MERMAID_INIT = "assets/javascripts/mermaid-init.js"
MERMAID_INIT_JS = "mermaid.initialize({ startOnLoad: false });\n"
GEN_HINT = "run `make gen` (`make setup` installs the dependencies only), or PCBOOK_DOCS_SOFT=1 to build without it"
_PLACEHOLDER = re.compile(r"<!--\s*(make-targets|lessons|cli:\s*(\w+)|steps:\s*(\d+)|exercise:\s*(\d+))\s*-->")
# A reference to steps by key: <!-- step: 4 tls12-aside -->, <!-- step-no: 4 tls12-aside -->, <!-- steps: 8 a b -->.
STEP_REF = re.compile(r"<!--\s*([Ss]teps?)(-no)?:\s*(\d+)\s+([a-z0-9][a-z0-9 -]*?)\s*-->")
EXERCISE = re.compile(r"<!--\s*exercise:\s*(\d+)\s*-->")
CHECKPOINT_STEPS = re.compile(r"<!--\s*checkpoint-steps:\s*(\d+)\s*-->")


# ---------------------------------------------------------------- Makefile


def makefile_targets(path: Path = ROOT / "Makefile") -> list[tuple[str, list[tuple[str, str]]]]:
    """[(section, [(target, help)])] from ``## Section`` lines and ``target: ... ## help`` lines."""
    sections: list[tuple[str, list[tuple[str, str]]]] = [("", [])]
    for line in path.read_text().splitlines():
        heading = re.match(r"^## (.+)$", line)
        if heading:
            sections.append((heading.group(1).strip(), []))
            continue
        target = re.match(r"^([a-zA-Z0-9_%-]+):.*?## (.+)$", line)
        if target:
            sections[-1][1].append((target.group(1).replace("%", "N"), target.group(2).strip()))
    return [(title, rows) for title, rows in sections if rows]


def render_make_targets() -> str:
    out = []
    for title, rows in makefile_targets():
        if title:
            out.append(f"### {title}\n")
        out.append("| Target | What it does |\n|---|---|")
        for target, text in rows:
            out.append(f"| `make {target}` | {_md_cell(text)} |")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- argparse


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def find_parser(module_name: str) -> argparse.ArgumentParser | None:
    """The module's argparse parser, or None if the module does not exist yet.

    Tries a ``build_parser()``-like factory first; otherwise runs ``main()`` with argument parsing
    intercepted, so the parser is captured before anything starts.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:  # ModuleNotFoundError, or `cannot import name X from pcbook.pb`
        missing_ours = bool(err.name) and (err.name == "pcbook" or err.name.startswith("pcbook."))
        if missing_ours and os.environ.get("PCBOOK_DOCS_SOFT"):
            return None
        if missing_ours:
            raise PluginError(f"cannot import {module_name} to document its flags ({err}); {GEN_HINT}") from None
        raise
    for name in ("build_parser", "make_parser", "parser", "get_parser", "create_parser", "_parser"):
        factory = getattr(module, name, None)
        if callable(factory):
            parser = factory()
            if isinstance(parser, argparse.ArgumentParser):
                return parser
    main = getattr(module, "main", None)
    if not callable(main):
        raise RuntimeError(f"{module_name} has no build_parser() and no main(): cannot document its flags")

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    saved = (argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args, sys.argv)
    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    argparse.ArgumentParser.parse_known_args = capture  # type: ignore[method-assign]
    sys.argv = [module_name, "--help"]
    try:
        main()
    except _Captured as got:
        return got.parser
    except TypeError:
        try:
            main([])
        except _Captured as got:
            return got.parser
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args, sys.argv = saved
    raise RuntimeError(f"{module_name}.main() never parsed its arguments: cannot document its flags")


def parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--long`` option of the parser and of its subcommands."""
    flags: set[str] = set()
    for action in parser._actions:
        flags.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= parser_flags(sub)
    return flags


def _action_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += " " + _metavar(action)
        else:
            name = _metavar(action)
        default = action.default
        if action.required:
            shown = "*required*"
        elif default in (None, argparse.SUPPRESS) or action.nargs == 0 and default is False:
            shown = ""
        else:
            shown = f"`{default}`"
        text = (action.help or "").replace("%(default)s", str(default))
        if action.metavar and action.choices and not isinstance(action.choices, dict):
            text += " (one of " + ", ".join(f"`{c}`" for c in action.choices) + ")"
        rows.append(f"| `{name}` | {shown} | {_md_cell(text)} |")
    return rows


def _metavar(action: argparse.Action) -> str:
    if action.metavar:
        return str(action.metavar)
    if action.choices and not isinstance(action.choices, dict):
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def render_cli(kind: str) -> str:
    module_name = CLI_MODULES.get(kind)
    if module_name is None:
        raise ValueError(f"unknown CLI placeholder 'cli: {kind}' (known: {', '.join(CLI_MODULES)})")
    parser = find_parser(module_name)
    if parser is None:
        log.info("generate: %s does not exist yet; its reference shows a note", module_name)
        return (
            f'!!! warning "Not generated yet"\n'
            f"    `{module_name}` does not exist in this checkout yet, so its flags cannot be listed.\n"
            f"    This table is rendered from the module's own parser at build time.\n"
        )
    parser.prog = f"python -m {module_name.removesuffix('.__main__')}"  # a package runs as itself
    out = ["| Flag | Default | Meaning |", "|---|---|---|", *_action_rows(parser), ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                rows = _action_rows(sub)
                out.append(f"**`{name}`**: {_md_cell(_sub_help(action, name))}\n")
                if rows:
                    out += ["| Argument | Default | Meaning |", "|---|---|---|", *rows, ""]
    help_text = parser.format_help().rstrip()
    out.append(f'??? example "`{parser.prog} --help`"\n')
    out.append("    ```text")
    out += [f"    {line}".rstrip() for line in help_text.splitlines()]
    out.append("    ```\n")
    return "\n".join(out)


def _sub_help(action: argparse._SubParsersAction, name: str) -> str:
    for choice in action._choices_actions:
        if choice.dest == name:
            return choice.help or ""
    return ""


# ---------------------------------------------------------------- lessons


def _manifest():  # type: ignore[no-untyped-def]
    """The lesson manifest, imported when a page needs it: it imports the lesson modules, and those the
    generated gRPC code, which on_config checks first (one line naming `make gen`, not a traceback)."""
    from pcbook.workbook import manifest

    return manifest


def render_lessons(page_src: str, existing: set[str]) -> str:
    """Every lesson; linked when its page exists (pages of new lessons may come later)."""

    here = PurePosixPath(page_src).parent
    out = ["| # | Lesson | Goal | Run it |", "|---|---|---|---|"]
    for lesson in _manifest().LESSONS:
        if lesson.doc_page in existing:
            link = f"[{lesson.title}]({posixpath.relpath(lesson.doc_page, here)})"
        else:
            link = f"{lesson.title} *(page coming)*"
        out.append(f"| {lesson.number} | {link} | {_md_cell(lesson.goal)} | `make {lesson.target}` |")
    return "\n".join(out) + "\n"


def render_steps(lesson: int | Lesson) -> str:
    """A lesson's steps, from the model: the stack of each, what it must show, and why."""
    if isinstance(lesson, int):
        lesson = _manifest().get(lesson)
    rows = []
    for i, step in enumerate(lesson.steps, 1):
        mark = '<br><span class="pcbook-checkpoint">checkpoint</span>' if step.checkpoint else ""
        stack = [html.escape(s.describe()) for s in step.servers] or ["no server running"]
        stack.append(f"<code>nginx/{html.escape(step.nginx.name)}</code> on {step.nginx.port}"
                     if step.nginx else "no nginx")
        if step.client is not None:
            stack.append(f"<code>{html.escape(step.client.command())}</code>")
        stack += [_code_spans_html(then) for then in step.then]
        claims = "".join(f"<li>{_code_spans_html(c)}</li>" for c in step.must_show())
        rows.append(
            "<tr>"
            f"<td>{i}{mark}</td>"
            f"<td>{html.escape(step.title)}</td>"
            f"<td>{'<br>'.join(stack)}</td>"
            f"<td><ul>{claims}</ul></td>"
            f"<td>{_code_spans_html(step.why)}</td>"
            "</tr>"
        )
    head = "<tr><th>#</th><th>Step</th><th>Stack</th><th>Must show</th><th>Why</th></tr>"
    return (
        '<div class="pcbook-steps" markdown="0"><table>\n<thead>'
        + head
        + "</thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table></div>\n\n"
        f"*Generated from `pcbook/workbook/manifest.py`: this is exactly what `make {lesson.target}` replays "
        f"and checks; `make check-{lesson.number}` replays the steps marked checkpoint.*\n"
    )


def render_step_ref(word: str, number_only: bool, lesson_number: int, keys: list[str]) -> str:
    """"step 6 (*title*)", "step 6", "steps 7 and 8" or "steps 1-4", from the keys of lesson N's steps."""
    try:
        lesson = _manifest().get(lesson_number)
        numbers = [lesson.number_of(key) for key in keys]
    except KeyError as err:
        raise PluginError(f"step reference <!-- {word}: {lesson_number} {' '.join(keys)} -->: {err.args[0]}") from None
    if (len(keys) > 1) != word.lower().endswith("s"):
        raise PluginError(f"<!-- {word}: {lesson_number} {' '.join(keys)} -->: `step` takes one key, `steps` several")
    shown = _number_list(numbers)
    if number_only or len(keys) > 1:
        return f"{word} {shown}"
    return f"{word} {shown} (*{lesson.step(keys[0]).title}*)"


def _number_list(numbers: list[int]) -> str:
    """[6] "6", [7, 8] "7 and 8", [1, 2, 3, 4] "1-4", [2, 3, 5, 8] "2, 3, 5 and 8"."""
    if len(numbers) >= 3 and numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return f"{numbers[0]}-{numbers[-1]}"
    items = [str(n) for n in numbers]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render_checkpoint_steps(lesson_number: int) -> str:
    lesson = _manifest().get(lesson_number)
    keys = [s.key for s in lesson.checkpoint_steps]
    return render_step_ref("steps" if len(keys) > 1 else "step", True, lesson_number, keys)


def render_exercise(number: int) -> str:
    """Lesson N's exercise, from its declaration: a new exercise needs only `<!-- exercise: N -->`."""
    lesson = _manifest().get(number)
    ex = lesson.exercise
    if ex is None:
        raise PluginError(f"lesson {number} has no exercise for <!-- exercise: {number} -->")
    steps = ", ".join(f"{lesson.number_of(key)} ({key})" for key in ex.steps)
    commands = [
        (f"make check-{number} CONF={ex.starter}", "the checkpoint against your file"),
        (f"make hint-{number}", f"the next of {len(ex.hints)} hints (ALL=1: all of them)"),
        (f"make watch-{number}", "checks your file each time you save it; Ctrl-C stops"),
        ("make progress", "every exercise, done or todo"),
    ]
    width = max(len(c) for c, _ in commands) + 2
    lang = {".conf": "nginx", ".yaml": "yaml", ".json": "json"}.get(Path(ex.starter).suffix, "text")
    return "\n".join([
        f"Edit `{ex.starter}` until its checkpoint passes: its `TODO`s mark what is missing, and "
        f"`{ex.answer}` (above) is one answer. Your file stands in for `{ex.answer}` in step(s) {steps}.",
        "",
        "```bash",
        *(f"{c:<{width}}# {what}" for c, what in commands),
        "```",
        "",
        f'```{lang} title="{ex.starter}"',
        f'--8<-- "{ex.starter}"',
        "```",
    ])


def render_step_refs(markdown: str) -> str:
    markdown = CHECKPOINT_STEPS.sub(lambda m: render_checkpoint_steps(int(m.group(1))), markdown)
    return STEP_REF.sub(lambda m: render_step_ref(m.group(1), bool(m.group(2)), int(m.group(3)),
                                                  m.group(4).split()), markdown)


def _code_spans_html(text: str) -> str:
    parts = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- MkDocs events


def _check_generated_code() -> None:
    """One line, not a traceback, when the docs are built before `make gen`: the CLIs import the code."""
    if os.environ.get("PCBOOK_DOCS_SOFT"):
        return
    try:
        importlib.import_module("pcbook.pb.laptop_service_pb2")
    except ImportError:
        raise PluginError(f"the generated gRPC code (pcbook/pb/*_pb2.py) is missing: {GEN_HINT}") from None


def nav_with_every_lesson(nav: list) -> list:
    """The nav with every lesson's page under "Lessons", in lesson order after those listed: a new
    lesson needs no edit of mkdocs.yml."""
    for entry in nav:
        if isinstance(entry, dict) and isinstance(entry.get("Lessons"), list):
            pages = entry["Lessons"]
            listed = {p for p in pages if isinstance(p, str)}
            pages += [lesson.doc_page for lesson in _manifest().LESSONS if lesson.doc_page not in listed]
            return nav
    raise PluginError('mkdocs.yml has no "Lessons" section in its nav for the lesson pages')


def on_config(config, **kwargs):
    _check_generated_code()
    if config.nav is not None:
        config.nav = nav_with_every_lesson(config.nav)
    # Snippets resolve against the repo root whatever the working directory is.
    snippets = config.mdx_configs.setdefault("pymdownx.snippets", {})
    snippets["base_path"] = [str(ROOT)]
    mermaid = mermaid_js.find()
    if mermaid is None:
        log.info("generate: no local mermaid.min.js (run `make setup`); diagrams will load it from the CDN")
    elif not mermaid.is_file():
        raise PluginError(f"{mermaid_js.ENV}={mermaid} is not a file")
    else:
        # Loaded before Material's own code looks for `mermaid`, so it never fetches it from the CDN.
        config.extra_javascript[:0] = [MERMAID_ASSET, MERMAID_INIT]
    return config


# A fence's highlighted lines named by directive, not typed: hl_lines="directives: nginx/x.conf a b" marks every
# line of that file whose first word is one of the names (comments and other words do not count).
HL_DIRECTIVES = re.compile(r'hl_lines="directives:\s*(\S+)\s+([^"]+)"')


def directive_lines(path: Path, names: list[str]) -> list[int]:
    """The 1-based numbers of the lines of `path` that start (after indentation) with one of `names`."""
    found = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        words = line.split()
        if words and words[0].rstrip(";") in names:
            found.setdefault(words[0].rstrip(";"), []).append(number)
    missing = [n for n in names if n not in found]
    if missing:
        raise PluginError(f"hl_lines: {path.relative_to(ROOT)} has no directive {', '.join(missing)}")
    return sorted(n for lines in found.values() for n in lines)


def render_highlights(markdown: str) -> str:
    def replace(m: re.Match) -> str:
        lines = directive_lines(ROOT / m.group(1), m.group(2).split())
        return f'hl_lines="{" ".join(map(str, lines))}"'

    return HL_DIRECTIVES.sub(replace, markdown)


def on_page_markdown(markdown, page, config, files, **kwargs):
    def replace(m: re.Match) -> str:
        if m.group(1) == "make-targets":
            return render_make_targets()
        if m.group(1) == "lessons":
            return render_lessons(page.file.src_uri, {f.src_uri for f in files})
        if m.group(2):
            return render_cli(m.group(2))
        if m.group(4):
            return render_exercise(int(m.group(4)))
        return render_steps(int(m.group(3)))

    return render_highlights(render_step_refs(_PLACEHOLDER.sub(replace, markdown)))


def on_post_build(config, **kwargs):
    mermaid = mermaid_js.find()
    if mermaid is not None:
        target = Path(config.site_dir) / MERMAID_ASSET
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mermaid, target)
        (Path(config.site_dir) / MERMAID_INIT).write_text(MERMAID_INIT_JS)
