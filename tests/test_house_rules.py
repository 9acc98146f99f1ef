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
