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


def test_files_are_replaced_whole_through_one_helper():
    """Write aside, then rename: `os.replace` lives in trainers/fileio.py's `atomic_write` and nowhere else, so every
    file another process reads is written whole the same way (and its temporaries named the way cleaners expect)."""
    offenders = [f"{rel(p)}:{i}: {code}" for p in SOURCES for i, code in code_lines(p).items()
                 if re.search(r"\bos\.(replace|rename)\b|\bfrom os import\b", code) and rel(p) != "trainers/fileio.py"]
    assert offenders == []

