"""``model/`` (network, training, evaluation) stands alone: nothing in it imports the web service."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("service", "csd_sr")  # the service, and the command line that joins the two


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``: statements anywhere (functions too) and import_module calls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_model_imports_nothing_from_service() -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted((ROOT / "model").rglob("*.py"))
        for line, module in _imports(path)
        if module.split(".")[0] in FORBIDDEN
    ]
    assert not offending, "model/ must not depend on the service:\n" + "\n".join(offending)


def test_the_check_sees_imports(tmp_path: Path) -> None:
    path = tmp_path / "probe.py"
    path.write_text(
        "import service\nfrom service.app import create_app\n\n\ndef f():\n    import importlib\n\n"
        "    importlib.import_module('service.cli')\n"
    )
    assert [m for _, m in _imports(path)] == ["service", "service.app", "importlib", "service.cli"]


def test_model_cli_runs_without_the_service() -> None:
    """``python -m model.cli`` (train/evaluate/export, e.g. under torchrun) loads no service module."""
    code = (
        "import sys, runpy; sys.argv = ['model.cli', '--help']\n"
        "try:\n    runpy.run_module('model.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('service', 'csd_sr', 'fastapi'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "{train,evaluate,quantize,export,teacher-targets,evaluate-sharp,average}" in result.stdout
