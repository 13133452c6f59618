"""The size bounds of ``service/`` that ruff cannot state: no function over 60 lines, no signature over 6
parameters (``self`` and ``cls`` aside). Ruff's PLR0913 / PLR0915 (pyproject.toml) say the same sooner."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"
MAX_LINES = 60
MAX_PARAMS = 6


def functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out = []
    for path in sorted(SERVICE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                out.append((f"{path.relative_to(SERVICE.parent)}:{node.lineno} {node.name}", node))
    return out


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = node.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return [n for n in names if n not in ("self", "cls")]


def test_the_walk_finds_the_service() -> None:
    assert len(functions()) > 100


def test_no_function_in_service_is_over_60_lines() -> None:
    long = {name: n.end_lineno - n.lineno + 1 for name, n in functions() if n.end_lineno - n.lineno + 1 > MAX_LINES}
    assert not long, f"functions over {MAX_LINES} lines, def to last line: {long}"


def test_no_signature_in_service_is_over_6_parameters() -> None:
    wide = {name: len(parameters(n)) for name, n in functions() if len(parameters(n)) > MAX_PARAMS}
    assert not wide, f"signatures over {MAX_PARAMS} parameters: {wide}"
