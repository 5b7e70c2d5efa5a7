"""The docs cannot rot: every command they show runs here, the reference is what the code generates, links resolve.

How a page shows a command decides what this test does with it:
- ```console blocks: `$ imgclass ...` lines run, in page order, and the lines shown under a command must appear in
  what it prints, in order (numbers are compared as "a number", so timings and accuracies may differ; a line
  `...` skips lines, and `...` inside a line matches anything). `$ echo $?` followed by a number gives the exit
  code the command before it must end with; otherwise it must exit 0.
- ```sh blocks: every line runs and must exit 0; nothing is compared.
- A block right after `<!-- not run: REASON -->` (network, GPUs, several machines, make targets) is only checked:
  it must parse (`bash -n`) and every `imgclass` invocation in it must use commands and options the CLI has.
- Inline code `imgclass ...` in the text is checked for its commands and options the same way.
- Any other block that shows a `$ imgclass` or `$ make` prompt, or a ```bash (or untagged) block that shows an
  `imgclass` or `make` command, fails the test. ```text blocks hold trees, messages and results.

`imgclass` runs in-process (typer.testing.CliRunner, so TensorFlow loads once); pipes around it run through bash
in the same folder (`... | imgclass predict RUN -`, `imgclass predict ... | jq ...`). To stay cheap, train and
finetune run one epoch whatever the page says (--epochs 1, and --finetune-epochs 1 when given), and the folders the
pages name (photos/, inbox/, ...) hold a few tiny generated images. The pages run in DOCS order in one folder, so a
page may use what an earlier one made (runs/digits from the README's quickstart)."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest
from PIL import Image

from tests.conftest import make_class_folders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run order: a page may use what an earlier page's commands wrote.
DOCS = ["README.md", "docs/guide.md", "docs/safety.md", "docs/scaling.md", "docs/architecture.md",
        "docs/development.md", "docs/benchmarks.md"]
GENERATED = "docs/cli.md"
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->$")
COMMAND_LINE = re.compile(r"^\s*(\$\s+)?([A-Z_][A-Z0-9_]*=\S*\s+)*(imgclass|make)(\s|$)")
PROMPT_LINE = re.compile(r"^\s*\$\s+([A-Z_][A-Z0-9_]*=\S*\s+)*(imgclass|make)(\s|$)")
SHELL_LANGS = ("", "bash", "shell", "zsh", "sh-session", "shell-session")  # ```text is for trees, messages, results
FAST = {"--epochs": "1", "--finetune-epochs": "1"}  # train and finetune: one epoch each
ENV = {"COLUMNS": "100", "NO_COLOR": "1"}
ANTS_BEES = {"ants": (150, 90, 40), "bees": (230, 200, 40)}


def _read(page: str) -> str:
    return open(os.path.join(ROOT, page), encoding="utf-8").read()


# --- the pages: fenced blocks and inline commands ------------------------------------------------------------------


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    lines: list[str]
    not_run: str | None = None  # the reason given in a <!-- not run: ... --> comment right before it

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    found, current, indent, previous = [], None, 0, ""
    for n, raw in enumerate(_read(page).splitlines(), 1):
        stripped = raw.strip()
        if current is None:
            if stripped.startswith("```"):
                indent = len(raw) - len(raw.lstrip())
                reason = NOT_RUN.match(previous)
                current = Block(page, n, stripped[3:].strip(), [], reason.group(1) if reason else None)
            elif stripped:
                previous = stripped
        elif stripped.startswith("```"):
            found.append(current)
            current, previous = None, ""
        else:
            current.lines.append(raw[indent:] if raw[:indent].strip() == "" else raw)
    return found


def inline_commands(page: str) -> list[tuple[int, str]]:
    """(line, text) of every inline code span outside fenced blocks that starts with `imgclass`."""
    found, fenced = [], False
    for n, line in enumerate(_read(page).splitlines(), 1):
        if line.strip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            found += [(n, m) for m in re.findall(r"``?(imgclass(?: [^`]*)?)``?", line)]
    return found


def logical_lines(lines: list[str]) -> list[str]:
    """Lines with backslash continuations joined."""
    out, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            out.append(pending + line)
            pending = ""
    return out + ([pending] if pending else [])


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)
    exit_code: int = 0


def console_steps(block: Block) -> list[Step]:
    steps: list[Step] = []
    lines = block.lines
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command.rstrip()[:-1] + " " + lines[i]
            if command.strip() == "echo $?":
                assert steps and i + 1 < len(lines), f"{block.where}: `echo $?` needs a command before and a code after"
                steps[-1].exit_code = int(lines[i + 1])
                i += 1
            else:
                steps.append(Step(command))
        elif steps:
            steps[-1].expected.append(line)
        i += 1
    return steps


def sh_steps(block: Block) -> list[Step]:
    return [Step(line) for line in logical_lines(block.lines) if line.strip() and not line.strip().startswith("#")]


def shell_text(block: Block) -> str:
    """What a block would give a shell: the `$ ` lines of a console block, or every line of a sh block."""
    if block.lang == "console":
        return "\n".join(line[2:] for line in block.lines if line.startswith("$ "))
    return "\n".join(block.lines)


# --- imgclass invocations against the real CLI ---------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _cli():
    import typer

    from imgclass_cli.cli import app

    return typer.main.get_command(app)


def _options(command) -> dict:
    """{'--top-k': param, '-k': param, ...} of a Click command, hidden aliases included (they are real options)."""
    found = {"--help": None}
    for p in command.params:
        if p.param_type_name == "option":
            for name in [*p.opts, *p.secondary_opts]:
                found[name] = p
    return found


def _placeholder(token: str) -> bool:
    """A word that stands for something in prose: DATA, RUN, PATH..., ..., [OPTIONS], NAME[:SPLIT]."""
    return token in ("...", "…") or bool(re.fullmatch(r"[\[\]A-Z_.:|]+", token))


def invocations(text: str) -> list[list[str]]:
    """The argument lists of every `imgclass` in a piece of shell (after a pipe, inside find -exec, ...)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unclosed quote: bash -n reports it where it matters
        return []
    found, current = [], None
    for tok in tokens:
        if current is not None:
            if re.fullmatch(r"[|&;()<>]+", tok) or tok in ("{}", "+"):
                found.append(current)
                current = None
            else:
                current.append(tok)
        if current is None and (tok == "imgclass" or tok.endswith("/imgclass")):
            current = []
    return found + ([current] if current is not None else [])


def check_invocation(args: list[str]) -> list[str]:
    """What is wrong with `imgclass ARGS` as far as the command line goes: unknown commands, options, choices."""
    group = _cli()
    known = _options(group)
    command, errors = None, []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            break
        if tok.startswith("-") and tok != "-":
            name, eq, value = tok.partition("=")
            opts = {**known, **(_options(command) if command else {})}
            if name not in opts:
                errors.append(f"imgclass {command.name if command else ''}: no option {name}")
            elif opts[name] is not None and not opts[name].is_flag and not opts[name].count:
                if not eq:
                    i += 1
                    value = args[i] if i < len(args) else ""
                desc = opts[name].type_descriptor
                choices = desc.choices if desc.is_choice else None
                literal = re.fullmatch(r"[a-z0-9_.-]+", value or "")
                if choices and literal and value not in [str(getattr(c, "value", c)) for c in choices]:
                    errors.append(f"imgclass {command.name if command else ''} {name}: {value!r} is not a choice")
        elif command is None:
            if tok in group.commands:
                command = group.commands[tok]
            elif _placeholder(tok):
                break
            else:
                errors.append(f"imgclass has no command {tok!r}")
                break
        i += 1
    return errors


# --- running a command line --------------------------------------------------------------------------------------


def _top_level_split(text: str, sep: str = "|") -> list[str]:
    """Split shell text at `|` outside quotes (not `||`)."""
    parts, current, quote, i = [], "", None, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"' and i + 1 < len(text):
                current += text[i:i + 2]
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "\\" and i + 1 < len(text):
            current += text[i:i + 2]
            i += 2
            continue
        elif c == sep and text[i + 1:i + 2] != sep and text[i - 1:i] != sep:
            parts.append(current)
            current = ""
            i += 1
            continue
        current += c
        i += 1
    return parts + [current]


def _bash(text: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", text], input=stdin, capture_output=True, text=True, timeout=120)


def _missing_tool(text: str) -> str | None:
    for tool in ("jq", "xargs", "sort", "uniq", "cut", "head", "tail", "find", "mv"):
        if re.search(rf"(^|[|;&]\s*|\s)({tool})(\s|$)", text) and not shutil.which(tool):
            return tool
    return None


def _imgclass_segment(segment: str) -> tuple[dict, list[str], dict] | None:
    """(env, args, redirections) when a pipeline segment is `[NAME=value ...] imgclass ARGS [> FILE] [2> FILE]`."""
    words = shlex.split(segment, comments=True)
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if not words or words[0] != "imgclass":
        return None
    args, redirect = [], {}
    it = iter(words[1:])
    for w in it:
        m = re.fullmatch(r"(2>|>>|>|<)(.*)", w)
        if m:
            redirect[m.group(1)] = m.group(2) or next(it)
        else:
            args.append(w)
    return env, args, redirect


def _fast(args: list[str]) -> list[str]:
    """train and finetune for one epoch (see the module docstring)."""
    if not ({"train", "finetune"} & set(args[:2])):
        return args
    out, i = [], 0
    while i < len(args):
        name = args[i].partition("=")[0]
        if name in FAST:
            out += [name, FAST[name]]
            i += 1 if "=" in args[i] else 2
            continue
        out.append(args[i])
        i += 1
    return out if "--epochs" in out else [*out, "--epochs", FAST["--epochs"]]


def run_line(runner, command: str) -> tuple[int, str]:
    """Run one shell line in the current folder: its exit code and what a terminal would show."""
    from imgclass_cli.cli import app, hoist_global_options

    segments = _top_level_split(command)
    parsed = [_imgclass_segment(s) if "imgclass" in s else None for s in segments]
    at = [i for i, p in enumerate(parsed) if p is not None]
    if not at:
        assert "imgclass" not in shlex.split(command, comments=True), \
            f"`{command}`: imgclass inside another command cannot run here; mark the block <!-- not run: ... -->"
        p = _bash(command)
        return p.returncode, p.stdout + p.stderr
    assert len(at) == 1 and not re.search(r"(;|&&|\|\|)", segments[at[0]]), \
        f"`{command}`: one imgclass per line, as a pipeline segment (or mark the block not run)"
    i = at[0]
    env, args, redirect = parsed[i]
    stdin = None
    if i > 0:
        before = _bash("|".join(segments[:i]))
        assert before.returncode == 0, f"`{command}`: the commands before imgclass failed: {before.stderr}"
        stdin = before.stdout
    if "<" in redirect:
        stdin = open(redirect["<"], encoding="utf-8").read()
    clean = {k: None for k in os.environ if k.startswith("IMGCLASS_")}  # a developer's own settings stay out
    result = runner.invoke(app, hoist_global_options(_fast(args)), input=stdin, env={**clean, **ENV, **env},
                           prog_name="imgclass")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    stdout, shown = result.stdout, result.output
    for target, text in ((redirect.get(">"), stdout), (redirect.get("2>"), result.stderr)):
        if target and target != "/dev/null":
            with open(target, "w", encoding="utf-8") as f:
                f.write(text)
    if ">" in redirect:
        shown = result.stderr
    if i == len(segments) - 1:
        return result.exit_code, shown
    assert result.exit_code == 0, f"`{command}`: imgclass exited {result.exit_code} in a pipeline:\n{result.output}"
    after = _bash("|".join(segments[i + 1:]), stdin=stdout)
    return after.returncode, result.stderr + after.stdout + after.stderr


# --- comparing what was printed with what the page shows -----------------------------------------------------------

NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")


def normalise(line: str) -> str:
    line = NUMBER.sub("0", line)
    line = re.sub(r"([─━═]){2,}", r"\1", line)  # table rules of any width
    return re.sub(r"\s+", " ", line).strip()


def _pattern(expected: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in normalise(expected).split("...")))


def missing_lines(expected: list[str], output: str) -> list[str]:
    """The shown lines that do not appear in `output`, in order (a shown `...` line skips any number of lines)."""
    actual = [normalise(line) for line in output.splitlines()]
    pos, missing = 0, []
    for line in expected:
        if not line.strip() or line.strip() in ("...", "…"):
            continue
        pattern = _pattern(line)
        hit = next((j for j in range(pos, len(actual)) if pattern.fullmatch(actual[j])), None)
        if hit is None:
            missing.append(line)
        else:
            pos = hit + 1
    return missing


# --- the folder the pages run in -----------------------------------------------------------------------------------


def _workspace(root) -> None:
    """The folders the pages name, with tiny images: photos/ (ants, bees; one text file named .jpg among them),
    inbox/ (loose images to sort)."""
    make_class_folders(os.path.join(root, "photos"), per_class=12, seed=3, classes=ANTS_BEES)
    with open(os.path.join(root, "photos", "bees", "notes.jpg"), "w") as f:
        f.write("not an image\n")
    inbox = os.path.join(root, "inbox")
    make_class_folders(inbox, per_class=3, seed=4, classes=ANTS_BEES)
    for name in ("ants", "bees"):
        for f in sorted(os.listdir(os.path.join(inbox, name))):
            os.rename(os.path.join(inbox, name, f), os.path.join(inbox, f"{name} {f}"))
        os.rmdir(os.path.join(inbox, name))
    Image.new("RGB", (20, 20), (150, 90, 40)).save(os.path.join(inbox, "-odd name.png"))


# --- the tests ---------------------------------------------------------------------------------------------------


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", os.path.join(ROOT, "tools", "gen_cli_docs.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert _read(GENERATED) == gen.render(), f"{GENERATED} differs from what the code generates: run make docs"


def test_every_command_block_is_run_or_marked():
    for page in DOCS:
        for b in blocks(page):
            if b.lang in ("console", "sh") or b.not_run:
                continue
            shown = [line for line in b.lines
                     if PROMPT_LINE.match(line) or (b.lang in SHELL_LANGS and COMMAND_LINE.match(line))]
            assert not shown, (f"{b.where}: a ```{b.lang or ''} block shows {shown[0]!r}: make it ```console or ```sh "
                               "so the test runs it, or put <!-- not run: REASON --> before it")


def test_not_run_blocks_parse_and_use_real_options():
    checked = 0
    for page in DOCS:
        for b in blocks(page):
            if not b.not_run:
                continue
            text = shell_text(b)
            if b.lang in ("console", "sh", "bash"):
                p = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
                assert p.returncode == 0, f"{b.where}: does not parse as shell: {p.stderr}"
            for args in invocations(text):
                assert not check_invocation(args), f"{b.where}: {check_invocation(args)}"
                checked += 1
    assert checked >= 5


def test_inline_commands_use_real_options():
    checked = 0
    for page in [*DOCS, GENERATED]:
        for line, span in inline_commands(page):
            for args in invocations(span):
                assert not check_invocation(args), f"{page}:{line}: `{span}`: {check_invocation(args)}"
                checked += 1
    assert checked >= 20


def test_option_checker_catches_mistakes():
    assert check_invocation(["predict", "RUN", "photos/", "-f", "jsonl", "--top-k", "3"]) == []
    assert check_invocation(["predict", "RUN", "--topk", "3"]) == ["imgclass predict: no option --topk"]
    assert check_invocation(["export", "RUN", "--to", "pt"]) == ["imgclass export --to: 'pt' is not a choice"]
    assert check_invocation(["trian", "photos/"]) == ["imgclass has no command 'trian'"]
    assert invocations("find x -exec imgclass predict r -f jsonl {} + > p.jsonl") == [["predict", "r", "-f", "jsonl"]]
    assert missing_lines(["epoch 10/10  loss 0.5 (0.8s)", "...", "saved ... runs/x"],
                         "epoch 1/1 loss 0.712 (3.1s)\nother\nsaved the run runs/x") == []


def test_links_and_files_named_in_the_docs_exist():
    anchors = {}

    def anchors_of(page):
        if page not in anchors:
            titles = [line.lstrip("#").strip() for line in _read(page).splitlines() if re.match(r"#{1,6} ", line)]
            anchors[page] = {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}
        return anchors[page]

    for page in [*DOCS, GENERATED]:
        text = _read(page)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # a web address: not checked offline
                continue
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else \
                os.path.join(ROOT, page)
            assert os.path.exists(resolved), f"{page}: link to {target}: no such file"
            if anchor and resolved.endswith(".md"):
                assert anchor in anchors_of(os.path.relpath(resolved, ROOT)), f"{page}: link to {target}: no such heading"
        for script in re.findall(r"(?<![\w/.])((?:bench|examples|tools)/[a-z0-9_./-]+\.(?:py|sh|yml|txt))\b", text):
            assert os.path.exists(os.path.join(ROOT, script)), f"{page}: names {script}, which does not exist"


@pytest.mark.slow
def test_every_shown_command_runs(runner, tmp_path, monkeypatch):
    _workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    ran, failures = 0, []
    for page in DOCS:
        for b in blocks(page):
            if b.not_run or b.lang not in ("console", "sh"):
                continue
            steps = console_steps(b) if b.lang == "console" else sh_steps(b)
            if _missing_tool("\n".join(s.command for s in steps)):  # e.g. no jq here: check it as if not run
                assert subprocess.run(["bash", "-n"], input=shell_text(b), text=True).returncode == 0, b.where
                assert not [e for a in invocations(shell_text(b)) for e in check_invocation(a)], b.where
                continue
            for step in steps:
                code, output = run_line(runner, step.command)
                ran += 1
                if code != step.exit_code:
                    failures.append(f"{b.where}: `{step.command}` exited {code}, not {step.exit_code}:\n{output}")
                elif missing := missing_lines(step.expected, output):
                    failures.append(f"{b.where}: `{step.command}` did not print {missing[0]!r}; it printed:\n{output}")
    assert not failures, "\n\n".join(failures)
    assert ran >= 20
