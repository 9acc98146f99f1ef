"""The architecture's seams, checked on the source: Ray and MLflow each behind one module, a trainer that runs
without either, and none of the APIs the reference notes list as traps (orchestrators.md §9, environment.md)."""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "trainers", "search_spaces")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_source_list_is_not_empty():
    assert len(SOURCES) > 20


@pytest.mark.parametrize(("library", "allowed"), [("ray", "orchestrator/tune_backend.py"),
                                                   ("mlflow", "orchestrator/tracking.py")])
def test_each_framework_is_imported_by_one_module_only(library, allowed):
    offenders = [rel(p) for p in SOURCES if library in imported_modules(p) and rel(p) != allowed]
    assert offenders == []


def test_trainers_run_without_ray_mlflow_or_the_orchestrator():
    offenders = [rel(p) for p in SOURCES if rel(p).startswith("trainers/")
                 and imported_modules(p) & {"ray", "mlflow", "orchestrator", "optuna"}]
    assert offenders == []


BANNED = re.compile(r"ray\.train\.report|ray\.air\.session|MLflowLoggerCallback|tune\.run\(|local_dir=|"
                    r"pretrained=True|load_state_dict_from_url|chdir_to_trial_dir")


def code_lines(path: Path) -> dict[int, str]:
    """Each line's code with comments and strings (docstrings too) removed: prose may name a trap, code may not."""
    lines: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE):
            lines[tok.start[0]] = lines.get(tok.start[0], "") + tok.string
    return lines


def test_no_trap_apis_and_no_bare_except():
    hits = [f"{rel(p)}:{i}: {code}" for p in SOURCES for i, code in code_lines(p).items()
            if BANNED.search(code) or code.strip().startswith("except:")]
    assert hits == []


MODULES = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in SOURCES}


def _own_module(name: str) -> str | None:
    """The longest prefix of a dotted name that is one of our modules (`trainers.data.tables.X` -> the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(module: str, path: Path) -> set[str]:
    """Every module of ours that `module` imports, at its top or inside a function (a late import still closes a
    loop), except under `if TYPE_CHECKING:`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(filter(None, (_own_module(a.name) for a in child.names)))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*parent, base] if base else parent)
                for alias in child.names:  # `from pkg import submodule` imports the submodule
                    target = _own_module(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else None
                    found.update(filter(None, [target or _own_module(base)]))
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found - {module}


def import_cycles() -> list[list[str]]:
    """The strongly connected components of more than one module in the import graph (Tarjan)."""
    graph = {m: import_edges(m, p) for m, p in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return cycles


def test_the_import_graph_sees_late_imports():
    assert "trainers.losses.options" in import_edges("trainers.config", MODULES["trainers.config"])


def test_no_import_cycles_even_through_late_imports():
    assert import_cycles() == []


MAX_LINES = 420  # STYLE.md 8: files a reader can hold in their head (about 400 lines)


def test_no_source_file_is_longer_than_a_reader_can_hold():
    long = {rel(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_files_are_replaced_whole_through_one_helper():
    """Write aside, then rename: `os.replace` lives in trainers/fileio.py's `atomic_write` and nowhere else, so every
    file another process reads is written whole the same way (and its temporaries named the way cleaners expect)."""
    offenders = [f"{rel(p)}:{i}: {code}" for p in SOURCES for i, code in code_lines(p).items()
                 if re.search(r"\bos\.(replace|rename)\b|\bfrom os import\b", code) and rel(p) != "trainers/fileio.py"]
    assert offenders == []


METRIC_PREFIXES = ("val/", "train/", "loss/", "time/")


FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+: an f-string is several tokens


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text between the quotes) of each string literal that is not a docstring. An f-string is one token on
    Python 3.11, so its text is the template (`val/{key}/miou`); from 3.12 on, its text up to the first `{`."""
    found: list[tuple[int, str]] = []
    statement_start, fstring_line = True, None
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if fstring_line is not None:  # the token after FSTRING_START: the f-string's leading text, if it has one
            found.append((fstring_line, tok.string if tok.type == tokenize.FSTRING_MIDDLE else ""))
            fstring_line = None
        if tok.type == FSTRING_START:
            fstring_line = tok.start[0]
        elif tok.type == tokenize.STRING and not statement_start:  # a string opening a statement is a docstring
            body = tok.string.lstrip("rRbBfFuU")
            quote = body[:3] if body[:3] in ('"""', "'''") else body[:1]
            found.append((tok.start[0], body[len(quote):-len(quote)]))
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            statement_start = tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)
    return found


def test_string_literals_sees_code_strings_and_f_strings_but_not_docstrings(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('"""val/doc"""\ndef f(k):\n    """val/doc"""\n    return (k, "val/a",\n            f"loss/{k}")\n')
    assert [(line, text.partition("{")[0]) for line, text in string_literals(path)] == [(4, "val/a"), (5, "loss/")]


def test_metric_keys_are_spelled_in_metric_names_only():
    """DESIGN.md "The seams": a key (or a key's prefix) in a string anywhere else drifts from the scheme unseen."""
    offenders = [f"{rel(p)}:{line}: {text}" for p in SOURCES if rel(p) != "trainers/metric_names.py"
                 for line, text in string_literals(p) if text.startswith(METRIC_PREFIXES)]
    assert offenders == []


REPORT_MODULES = ("orchestrator.report", "orchestrator.results")


def test_the_report_imports_neither_torch_nor_the_data_package():
    """The report reads what the trials logged: importing it in a fresh interpreter loads neither torch nor
    trainers.data, and no function of it imports them later."""
    import subprocess
    import sys

    probe = (f"import sys\nimport {', '.join(REPORT_MODULES)}\n"
             "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'trainers.data'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    sources = [p for p in SOURCES if rel(p).startswith("orchestrator/report/") or rel(p) == "orchestrator/results.py"]
    offenders = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{rel(path)}: {n}" for n in names if n.split(".")[0] == "torch"
                          or n == "trainers.data" or n.startswith("trainers.data.")]
    assert len(sources) > 5 and offenders == []
