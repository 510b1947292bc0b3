"""The docs tell the truth about the code: commands that exist, flags that exist, every ERROR explained.

Three promises, checked without training anything:

- every command shown in README.md and docs/*.md names a script, make target and flags that
  exist (a script's flags are the ones its --help lists; train.py's are the config keys);
- every script answers --help and is mentioned in some doc;
- every ERROR (and WARNING) line the code can print has a row in a troubleshooting table:
  the message templates are read out of the sources (Python with `ast`, bash with a small
  word parser), and each must match a table cell whose header names ERROR or WARNING.
  A cell writes the variable parts as placeholders (`<file>`, `<N>`) or as example values.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, base_env

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = ROOT / "scripts"
PYTHON_SOURCES = [ROOT / "train.py", *sorted((ROOT / "trainkit").rglob("*.py")), *sorted(SCRIPTS.rglob("*.py"))]
BASH_SOURCES = sorted(SCRIPTS.glob("*.sh")) + sorted((SCRIPTS / "lib").glob("*.sh"))
# Scripts that take train.py's config keys as flags (TRL's parser), on top of what their --help lists.
CONFIG_FLAG_SCRIPTS = {"train.py", "validate_training_config.py"}
# Scripts that pass everything after a bare `--` on to train.py.
PASSTHROUGH_SCRIPTS = {"train.sh", "train_h100_runpod.sh", "train_m4_local.sh", "supervise.sh"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ---------------------------------------------------------------------------
# Markdown: code, commands and tables


FENCE = re.compile(r"^(\s*)(```|~~~)\s*([\w+-]*)")
SHELL_LANGS = {"bash", "sh", "shell", "zsh"}


@dataclass(frozen=True)
class Snippet:
    doc: Path
    line: int
    text: str


def fenced_blocks(path: Path):
    """(language, first line number, lines) of each fenced code block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, lang, start, body = match.group(2), match.group(3).lower(), i + 2, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        yield lang, start, body
        i += 1


def prose(path: Path) -> str:
    """The document without its fenced blocks (blank lines keep line numbers)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    inside = False
    out = []
    for line in lines:
        if FENCE.match(line):
            inside = not inside
            out.append("")
            continue
        out.append("" if inside else line)
    return "\n".join(out)


def shell_snippets(path: Path):
    """Command lines in shell blocks, `$ ` lines in other blocks, and inline code that names a script."""
    for lang, start, body in fenced_blocks(path):
        joined: list[tuple[int, str]] = []
        pending = ""
        for offset, line in enumerate(body):
            if lang not in SHELL_LANGS:
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if pending:
                line = pending + " " + line.lstrip()
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1]
                continue
            pending = ""
            joined.append((start + offset, line))
        yield from (Snippet(path, number, text) for number, text in joined)
    for number, line in enumerate(prose(path).splitlines(), start=1):
        for span in re.findall(r"``?([^`]+?)``?", line):
            if re.search(r"(^|[\s/])(scripts/[\w.-]+|train\.py)\b|^make\s+\w", span.strip()):
                yield Snippet(path, number, span.strip())


def command_segments(text: str) -> list[list[str]]:
    """The simple commands of one shell line, as word lists (comments dropped)."""
    text = re.sub(r"(^|\s)#.*$", "", text)
    words: list[str] = []
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:  # an unbalanced quote in an example: fall back to plain words
        words = text.split()
    segments, current = [], []
    for word in words:
        if word and set(word) <= set(";&|()"):
            segments.append(current)
            current = []
        else:
            current.append(word)
    segments.append(current)
    return [s for s in segments if s]


@dataclass(frozen=True)
class Command:
    where: str
    program: str  # "make", a scripts/ path, or "train.py"
    args: tuple[str, ...]


SCRIPT_WORD = re.compile(r"^(?:\.?/)?(?:(?P<dir>[\w./-]*/))?(?P<name>[\w-]+\.(?:sh|py))$")


def commands_in(snippet: Snippet) -> list[Command]:
    found = []
    for words in command_segments(snippet.text):
        where = f"{rel(snippet.doc)}:{snippet.line}: {snippet.text}"
        if words[0] == "make":
            found.append(Command(where, "make", tuple(words[1:])))
            continue
        for i, word in enumerate(words):
            match = SCRIPT_WORD.match(word)
            if not match:
                continue
            directory, name = match.group("dir") or "", match.group("name")
            if name == "train.py" and directory in ("", "./"):
                found.append(Command(where, "train.py", tuple(words[i + 1:])))
            elif directory.endswith("scripts/") or (SCRIPTS / name).is_file():
                found.append(Command(where, f"scripts/{name}", tuple(words[i + 1:])))
            break  # the first script word is the program; later ones are its arguments
    return found


def all_commands() -> list[Command]:
    return [command for doc in DOCS for snippet in shell_snippets(doc) for command in commands_in(snippet)]


@functools.cache
def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set()
    for match in re.finditer(r"^([A-Za-z0-9_. -]+?)\s*:(?![=:])", text, re.M):
        targets.update(match.group(1).split())
    return targets


@functools.cache
def help_text(script: str) -> str:
    path = ROOT / script
    cmd = ["bash", str(path), "--help"] if path.suffix == ".sh" else [sys.executable, str(path), "--help"]
    result = subprocess.run(cmd, cwd=ROOT, env=base_env(NO_COLOR="1"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{script} --help exited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


@functools.cache
def config_keys() -> frozenset[str]:
    from trainkit.config.settings import known_keys

    return frozenset(known_keys())


def flag_names(args) -> list[str]:
    return [a[2:].split("=", 1)[0] for a in args if a.startswith("--") and len(a) > 2]


def flag_problems(command: Command) -> list[str]:
    name = Path(command.program).name
    args = list(command.args)
    train_args: list[str] = []
    if name in PASSTHROUGH_SCRIPTS and "--" in args:
        cut = args.index("--")
        args, train_args = args[:cut], args[cut + 1:]
    problems = []
    if name == "train.py":
        allowed = set(config_keys()) | {"config", "help", "help-all", "dry-run"}
    else:
        text = help_text(command.program)
        allowed = set(re.findall(r"(?<![\w-])--([\w-]+)", text)) | {"help"}
        if name in CONFIG_FLAG_SCRIPTS:
            allowed |= config_keys()
    for flag in flag_names(args):
        if flag not in allowed:
            where = f"in {command.program} --help" if name != "train.py" else "a config key (config.known_keys())"
            problems.append(f"--{flag} is not {where}")
    for flag in flag_names(train_args):
        if flag not in config_keys():
            problems.append(f"--{flag} (after --, for train.py) is not a config key")
    return problems


def test_the_docs_show_commands_at_all():
    programs = {c.program for c in all_commands()}
    assert {"make", "train.py", "scripts/train_h100_runpod.sh", "scripts/check_training_status.sh"} <= programs


def test_every_command_in_the_docs_names_a_script_or_make_target_that_exists():
    missing = []
    for command in all_commands():
        if command.program == "make":
            targets = [a for a in command.args if not a.startswith("-") and "=" not in a]
            missing += [f"{command.where}\n    make target {t!r} is not in the Makefile"
                        for t in targets if t not in make_targets()]
        elif not (ROOT / command.program).is_file():
            missing.append(f"{command.where}\n    {command.program} does not exist")
    assert not missing, "commands in the docs that do not exist:\n" + "\n".join(missing)


def test_every_flag_in_the_docs_is_one_the_script_takes():
    problems = []
    for command in all_commands():
        if command.program == "make" or not (ROOT / command.program).is_file():
            continue  # reported by the test above
        problems += [f"{command.where}\n    {p}" for p in flag_problems(command)]
    assert not problems, "flags in the docs that the scripts do not list in --help:\n" + "\n".join(problems)


def all_scripts() -> list[Path]:
    return sorted(p for p in SCRIPTS.iterdir() if p.suffix in (".sh", ".py") and p.is_file())


@pytest.mark.parametrize("script", [rel(p) for p in all_scripts()])
def test_every_script_answers_help_with_its_usage(script):
    text = help_text(script)
    assert Path(script).name in text, f"{script} --help does not name the script:\n{text}"


def test_every_script_is_mentioned_in_the_docs():
    text = "\n".join(doc.read_text(encoding="utf-8") for doc in DOCS)
    unmentioned = [rel(p) for p in all_scripts() if p.name not in text]
    assert not unmentioned, f"scripts no doc mentions: {', '.join(unmentioned)}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", prose(doc), re.M)}


def test_every_link_between_the_docs_points_to_a_file_and_heading_that_exist():
    broken = []
    for doc in DOCS:
        for number, line in enumerate(prose(doc).splitlines(), start=1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"^[a-z]+:", target):
                    continue  # https:, mailto:
                path, _, fragment = target.partition("#")
                file = (doc.parent / path).resolve() if path else doc
                if not file.exists():
                    broken.append(f"{rel(doc)}:{number}: {target} (no such file)")
                elif fragment and file.suffix == ".md" and fragment not in anchors(file):
                    broken.append(f"{rel(doc)}:{number}: {target} (no heading #{fragment})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_command_extractor_reads_shell_blocks_inline_code_and_passthrough_flags(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "Run `scripts/check_training_status.sh --json` or `make demo`.\n\n"
        "```bash\n"
        "cd /workspace/trainkit && scripts/train_h100_runpod.sh --no-wait \\\n"
        "    -- --max_steps 10   # comment --not-a-flag\n"
        "tail -f logs/training_*.log\n"
        "python llama.cpp/convert_hf_to_gguf.py merged --outfile x.gguf\n"
        "```\n",
        encoding="utf-8",
    )
    found = [c for s in shell_snippets(doc) for c in commands_in(s)]
    assert [(c.program, c.args) for c in found] == [
        ("scripts/train_h100_runpod.sh", ("--no-wait", "--", "--max_steps", "10")),
        ("scripts/check_training_status.sh", ("--json",)),
        ("make", ("demo",)),
    ]
    assert flag_problems(found[0]) == []
    assert flag_problems(Command("x", "scripts/train_h100_runpod.sh", ("--bogus", "--", "--max_stepz", "1"))) == [
        "--bogus is not in scripts/train_h100_runpod.sh --help",
        "--max_stepz (after --, for train.py) is not a config key",
    ]


# ---------------------------------------------------------------------------
# Message templates in the code

HOLE = None  # a placeholder segment: text only known at run time


@dataclass(frozen=True)
class Template:
    kind: str  # "error" or "warning"
    source: str  # file:line
    variants: tuple[tuple, ...]  # each a tuple of str segments and HOLEs
    fragment: bool = False  # part of a longer message: matched anywhere inside a cell

    def render(self, variant=None) -> str:
        return "".join("<…>" if s is HOLE else s for s in (variant or self.variants[0]))

    @property
    def literal_length(self) -> int:
        return max(sum(len(s) for s in v if s is not HOLE) for v in self.variants)


def literal_words(variant) -> bool:
    """Whether the template says anything of its own (a word of 3+ letters)."""
    return bool(re.search(r"[A-Za-z]{3,}", "".join(s for s in variant if s is not HOLE)))


def forwarded(template: Template) -> bool:
    # A message that is only variables, like protocol.error(exc.message, exc.hint) or
    # f"{path}: {problem[0]}", forwards text written elsewhere; that text is a template
    # of its own (the exception, BadLine or problem tuple that built it), checked there.
    return not any(literal_words(v) for v in template.variants)


MAX_VARIANTS = 16


def product(*options: list[tuple]) -> list[tuple]:
    out = [tuple(itertools.chain.from_iterable(c)) for c in itertools.product(*options)]
    return out[:MAX_VARIANTS]


# Texts that become part of a longer ERROR line written elsewhere, so they are matched anywhere
# inside a table cell: BadLine's `what` follows "<file>:<line>: ", LossDiverged's `detail`
# precedes " at step <N>: training diverged", and the (what, hint) tuples of the data-file
# checks (MAGIC's entries, and the tuples in the functions named here) follow "<file>: ".
FRAGMENT_CLASSES = {"BadLine": 0, "LossDiverged": 2}  # class name: index of the text argument
FRAGMENT_TUPLE_FUNCTIONS = {"whole_file_problem", "check_chat_file"}
FRAGMENT_DICTS = {"MAGIC"}
TEXT_METHODS = ("replace", "strip", "rstrip", "lstrip")  # str methods that keep a message's words
PY_ERROR_SINKS = {("protocol", "error"), ("report", "error")}
PY_WARNING_SINKS = {("protocol", "warning"), ("report", "warning")}


def textual(node) -> bool:
    """Whether an expression is visibly text (so + concatenates rather than adds numbers)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.BinOp):
        return textual(node.left) or textual(node.right)
    if isinstance(node, ast.IfExp):
        return textual(node.body) or textual(node.orelse)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TEXT_METHODS:
        return textual(node.func.value)
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        return textual(node.value)
    return isinstance(node, ast.JoinedStr)


def call_names(call: ast.Call) -> tuple[str | None, str | None]:
    """(receiver, name) of a call: ("protocol", "error") for protocol.error(...), (None, "warn") for warn(...)."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    base = func.value if isinstance(func, ast.Attribute) else None
    receiver = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
    return receiver, name


def python_sink(call: ast.Call, classes: set[str], wrappers: dict[str, tuple[str, int]]):
    """(kind, index of the message argument) when this call prints or raises a message, else None."""
    receiver, name = call_names(call)
    if (receiver, name) in PY_ERROR_SINKS or name in classes:
        return "error", 0
    if (receiver, name) in PY_WARNING_SINKS:
        return "warning", 0
    if name in wrappers and receiver != "warnings":
        return wrappers[name]
    return None


def functions_and_module(tree):
    yield tree
    yield from (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def walk_own(scope):
    """Nodes of a function (or the module) without those of functions nested in it."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def constant_names(target, value) -> dict:
    """NAME = "text" / NAME = 20 / A, B = 20, 24 at module level."""
    if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, (str, int, float)):
        return {target.id: value.value}
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
        out = {}
        for t, v in zip(target.elts, value.elts, strict=True):
            out.update(constant_names(t, v))
        return out
    return {}


def single_assignment(scope, name: str):
    """The value a function gives a local name, when it gives it exactly one (None otherwise)."""
    if isinstance(scope, ast.Module):
        return None
    params = {a.arg for a in scope.args.args + scope.args.kwonlyargs + scope.args.posonlyargs}
    stores = [n for n in walk_own(scope) if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store)]
    values = [n.value for n in walk_own(scope) if isinstance(n, ast.Assign) and len(n.targets) == 1
              and isinstance(n.targets[0], ast.Name) and n.targets[0].id == name]
    return values[0] if len(values) == 1 and len(stores) == 1 and name not in params else None


class PythonFile:
    """The message templates of one Python file."""

    def __init__(self, path: Path, tree: ast.Module, classes: set[str], wrappers: dict[str, tuple[str, int]]):
        self.path, self.tree, self.classes, self.wrappers = path, tree, classes, wrappers
        self.constants = {}
        for node in tree.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self.constants.update(constant_names(target, node.value))

    def variants(self, node, scope, depth=0) -> list[tuple]:
        """The texts an expression can have: literal parts kept, everything else a HOLE."""
        if depth > 3:
            return [(HOLE,)]
        if isinstance(node, ast.Constant):
            return [(str(node.value),)] if isinstance(node.value, (str, int, float)) else [(HOLE,)]
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append([(value.value,)])
                elif value.format_spec is None and value.conversion == -1:
                    parts.append(self.variants(value.value, scope, depth + 1))
                else:
                    parts.append([(HOLE,)])
            return product(*parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and (textual(node.left) or textual(node.right)):
            return product(self.variants(node.left, scope, depth), self.variants(node.right, scope, depth))
        if isinstance(node, ast.IfExp):
            return (self.variants(node.body, scope, depth) + self.variants(node.orelse, scope, depth))[:MAX_VARIANTS]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TEXT_METHODS:
            return self.variants(node.func.value, scope, depth)
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            return self.variants(node.value, scope, depth)
        if isinstance(node, ast.Name):
            value = single_assignment(scope, node.id)
            if value is not None:
                return self.variants(value, scope, depth + 1)
            if node.id in self.constants:
                return [(str(self.constants[node.id]),)]
        return [(HOLE,)]

    def template(self, kind, node, expr, scope, fragment=False) -> Template:
        return Template(kind, f"{rel(self.path)}:{node.lineno}", tuple(self.variants(expr, scope)), fragment)

    def templates(self) -> list[Template]:
        found = []
        for scope in functions_and_module(self.tree):
            for node in walk_own(scope):
                if isinstance(node, ast.Call):
                    sink = python_sink(node, self.classes, self.wrappers)
                    if sink and len(node.args) > sink[1]:
                        found.append(self.template(sink[0], node, node.args[sink[1]], scope))
                    index = FRAGMENT_CLASSES.get(call_names(node)[1])
                    if index is not None and len(node.args) > index:
                        found.append(self.template("error", node, node.args[index], scope, fragment=True))
                elif (isinstance(node, ast.Tuple) and node.elts and isinstance(node.ctx, ast.Load)
                      and getattr(scope, "name", None) in FRAGMENT_TUPLE_FUNCTIONS):
                    found.append(self.template("error", node, node.elts[0], scope, fragment=True))
                elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) in FRAGMENT_DICTS
                                                          for t in node.targets):
                    for value in getattr(node.value, "values", []):
                        if isinstance(value, ast.Tuple) and value.elts:
                            found.append(self.template("error", value, value.elts[0], scope, fragment=True))
        return found


@functools.cache
def python_trees() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in PYTHON_SOURCES}


def error_classes() -> set[str]:
    """TrainkitError and every class that derives from it, in any of the sources."""
    classes = {"TrainkitError"}
    defs = [n for tree in python_trees().values() for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    while True:
        more = {d.name for d in defs
                if any(getattr(b, "id", getattr(b, "attr", None)) in classes for b in d.bases)} - classes
        if not more:
            return classes
        classes |= more


def python_wrappers() -> dict[str, tuple[str, int]]:
    """Functions that pass a parameter on as the message: warn(message, hint) and the like."""
    wrappers: dict[str, tuple[str, int]] = {}
    for tree in python_trees().values():
        for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            if func.name in ("error", "warning"):
                continue  # the sinks themselves (Report.error, protocol.error)
            params = [a.arg for a in func.args.args if a.arg not in ("self", "cls")]
            for call in (n for n in walk_own(func) if isinstance(n, ast.Call)):
                sink = python_sink(call, set(), {})
                if sink and call.args and isinstance(call.args[0], ast.Name) and call.args[0].id in params:
                    wrappers[func.name] = (sink[0], params.index(call.args[0].id))
    return wrappers


# ---- bash ----------------------------------------------------------------------------

BASH_SINKS = {"tk_die": ("error", 1), "tk_error": ("error", 0), "tk_warning": ("warning", 0)}


def bash_words(text: str) -> list[tuple]:
    """Words of a bash command line, each a tuple of literal strings and HOLEs for expansions.

    Stops at an unquoted ;, |, &, ) or #. Handles "…" with nested $(…), ${…} and $((…)),
    '…', and backslash escapes — enough for the scripts' message calls.
    """
    words, word, i, quote = [], [], 0, None

    def expansion(j):  # index just past the $… that starts at j
        if text.startswith("$((", j):
            return matching(j + 1, "(", ")")
        if text.startswith("$(", j):
            return matching(j + 1, "(", ")")
        if text.startswith("${", j):
            return matching(j + 1, "{", "}")
        m = re.compile(r"\$(?:[A-Za-z_]\w*|[0-9@*#?$!-])").match(text, j)
        return m.end() if m else j + 1

    def matching(j, opening, closing):
        level, k, inner_quote = 0, j, None
        while k < len(text):
            c = text[k]
            if inner_quote:
                if c == "\\" and inner_quote == '"':
                    k += 1
                elif c == inner_quote:
                    inner_quote = None
            elif c in "'\"":
                inner_quote = c
            elif c == opening:
                level += 1
            elif c == closing:
                level -= 1
                if level == 0:
                    return k + 1
            k += 1
        return k

    def add(piece):
        if piece is HOLE and word and word[-1] is HOLE:
            return
        if piece is not HOLE and word and word[-1] is not HOLE:
            word[-1] += piece
        else:
            word.append(piece)

    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                add(c)
            i += 1
        elif quote == '"':
            if c == "\\" and i + 1 < len(text) and text[i + 1] in '$`"\\':
                add(text[i + 1])
                i += 2
            elif c == '"':
                quote = None
                i += 1
            elif c == "$" and i + 1 < len(text) and text[i + 1] not in " \"":
                add(HOLE)
                i = expansion(i)
            elif c == "`":
                add(HOLE)
                i = text.find("`", i + 1) + 1 or len(text)
            else:
                add(c)
                i += 1
        else:
            if c in " \t":
                if word:
                    words.append(tuple(word))
                    word = []
                i += 1
            elif c in ";|&)#":
                break
            elif c in "'\"":
                quote = c
                if not word:
                    word.append("")
                i += 1
            elif c == "\\" and i + 1 < len(text):
                add(text[i + 1])
                i += 2
            elif c == "$":
                add(HOLE)
                i = expansion(i)
            else:
                add(c)
                i += 1
    if word:
        words.append(tuple(word))
    return words


def bash_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) with backslash-continued lines joined and comment lines dropped."""
    out, pending, start = [], "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not pending and line.lstrip().startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def bash_calls(path: Path, sinks: dict[str, tuple[str, int]]):
    """(line, sink name, word list after the name) for each call of a sink."""
    names = "|".join(map(re.escape, sinks))
    pattern = re.compile(rf"(?:^|[\s;&|({{!])({names})(?=\s)(.*)$")
    for number, line in bash_lines(path):
        rest = line
        while (match := pattern.search(rest)) is not None:
            yield number, match.group(1), bash_words(match.group(2))
            rest = match.group(2)


def bash_wrappers() -> dict[str, tuple[str, int]]:
    """Functions such as die_with_log MESSAGE HINT that hand "$1" on to tk_die or tk_error."""
    wrappers = {}
    for path in BASH_SOURCES:
        text = path.read_text(encoding="utf-8")
        for name, body in re.findall(r"^(\w+)\(\)\s*\{\n(.*?)^\}", text, re.M | re.S):
            if name in BASH_SINKS:
                continue
            for sink, (kind, index) in BASH_SINKS.items():
                skip = r"\S+\s+" * index  # tk_die's exit code comes before the message
                call = re.search(rf"\b{sink}\s+{skip}\"\$(\d)\"", body)
                if call:
                    wrappers[name] = (kind, int(call.group(1)) - 1)
    return wrappers


@functools.cache
def code_templates() -> tuple[Template, ...]:
    found: list[Template] = []
    classes, wrappers = error_classes(), python_wrappers()
    for path, tree in python_trees().items():
        found += PythonFile(path, tree, classes, wrappers).templates()
    sinks = {**BASH_SINKS, **bash_wrappers()}
    for path in BASH_SOURCES:
        for number, name, words in bash_calls(path, sinks):
            kind, index = sinks[name]
            if len(words) > index:
                found.append(Template(kind, f"{rel(path)}:{number}", (words[index],)))
    return tuple(found)


# ---------------------------------------------------------------------------
# Troubleshooting tables


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.replace("\\|", "|") for c in cells]


def normalise(text: str) -> str:
    text = text.replace("`", "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"^(❌ |⚠️ )?(ERROR|WARNING): ", "", text)


@functools.cache
def table_cells() -> tuple[tuple[str, str], ...]:
    """(where, normalised text) of every cell of every table whose header names ERROR or WARNING."""
    cells = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        header = None
        for number, line in enumerate(lines, start=1):
            if not line.lstrip().startswith("|"):
                header = None
                continue
            if header is None:
                header = line
                continue
            if re.match(r"^\s*\|[\s:|-]+\|?\s*$", line):
                continue
            if "ERROR" in header or "WARNING" in header:
                cells += [(f"{rel(doc)}:{number}", normalise(c)) for c in split_row(line)]
    return tuple(cells)


def pattern(variant, anchored: bool) -> re.Pattern:
    pieces = []
    for segment in variant:
        if segment is HOLE:
            pieces.append(".*?")
        else:
            literal = re.escape(segment.replace("`", ""))
            pieces.append(re.sub(r"(\\ |\s)+", r"\\s*", literal))
    body = "".join(pieces)
    return re.compile(f"^{body}$" if anchored else body, re.S)


@functools.cache
def compiled(template: Template) -> tuple[re.Pattern, ...]:
    return tuple(pattern(v, anchored=not template.fragment) for v in template.variants if literal_words(v))


def documented(templates, cells=None) -> dict[Template, bool]:
    """Whether each template is explained by a cell.

    A whole message must match a cell from start to end; its placeholders match anything.
    When a cell matches several messages, it documents only the most specific (the most
    literal text): "config file not found: <file>" documents "config file not found: {path}",
    not also "{key} not found: {path}". A fragment only has to occur inside some cell.
    """
    cells = table_cells() if cells is None else cells
    result = {t: False for t in templates}
    whole = [t for t in templates if not t.fragment]
    for _, cell in cells:
        matching = [t for t in whole if any(p.match(cell) for p in compiled(t))]
        if matching:
            best = max(t.literal_length for t in matching)
            for t in matching:
                if t.literal_length == best:
                    result[t] = True
    for t in templates:
        if t.fragment:
            result[t] = any(p.search(cell) for _, cell in cells for p in compiled(t))
    return result


def undocumented(kind: str) -> list[str]:
    templates = [t for t in code_templates() if t.kind == kind and not forwarded(t)]
    verdicts = documented(templates)
    return sorted(f"  {t.source}: {t.render()}" for t, ok in verdicts.items() if not ok)


def test_the_message_extractor_finds_python_and_bash_messages():
    rendered = {(t.kind, t.render()) for t in code_templates()}
    assert ("error", "config file not found: <…>") in rendered  # raise ConfigError(f"...")
    assert ("error", "unknown argument: <…>") in rendered  # tk_die "$TK_EXIT_ERROR" "unknown argument: $1"
    assert ("warning", "no W&B API key found: logging offline") in rendered  # warn(...), a wrapper
    assert ("error", "<…> is not valid YAML: <…>") in rendered  # f"...".replace(...)
    sources = {t.source.split(":")[0] for t in code_templates()}
    assert {"trainkit/config/settings.py", "trainkit/data/checks.py", "scripts/setup.sh", "scripts/train.sh"} <= sources
    # die_with_log MESSAGE HINT hands "$1" to tk_die: its callers' messages count.
    assert any(t.render().startswith("conda could not create env") for t in code_templates())
    # "Python {text} is too old" with text resolved from its single assignment stays one template.
    assert any(t.render().startswith("only <…> GB free of") for t in code_templates())


def test_the_fragment_registries_name_things_that_exist():
    text = "\n".join(p.read_text(encoding="utf-8") for p in PYTHON_SOURCES)
    for name in [*FRAGMENT_CLASSES, *FRAGMENT_TUPLE_FUNCTIONS, *FRAGMENT_DICTS]:
        assert re.search(rf"^\s*(class |def )?{name}\b", text, re.M), f"{name} is gone: update FRAGMENT_* here"


def test_a_cell_documents_the_most_specific_message_it_matches():
    generic = Template("error", "a", (("", HOLE, " not found: ", HOLE),))
    specific = Template("error", "b", (("config file not found: ", HOLE),))
    cells = [("x", "config file not found: <file>")]
    assert documented([generic, specific], cells) == {generic: False, specific: True}
    cells.append(("y", "train_file not found: <path>"))
    assert documented([generic, specific], cells) == {generic: True, specific: True}


def test_every_error_the_code_can_print_is_in_a_troubleshooting_table():
    # Read out of the code: protocol.error / report.error calls, TrainkitError and its subclasses,
    # functions that forward a parameter to one of those (warn, die_with_log), tk_die / tk_error,
    # and the fragments above. Not read: text built by Python inside a bash heredoc (the two
    # "status.json is …" problems of scripts/lib/status.sh); TROUBLESHOOTING.md lists them by hand.
    missing = undocumented("error")
    assert not missing, (
        f"{len(missing)} ERROR message(s) the code can print are in no troubleshooting table "
        "(a table in README.md or docs/*.md whose header names ERROR; placeholders may be written "
        "<like-this>). Add a row to docs/TROUBLESHOOTING.md for each:\n" + "\n".join(missing)
    )


def test_every_warning_the_code_can_print_is_in_a_troubleshooting_table():
    missing = undocumented("warning")
    assert not missing, (
        f"{len(missing)} WARNING message(s) the code can print are in no troubleshooting table "
        "(a table in README.md or docs/*.md whose header names WARNING). "
        "Add a row to docs/TROUBLESHOOTING.md for each:\n" + "\n".join(missing)
    )
