"""Reading the project's PromQL: dashboard targets, alert rules, the adapter rule, and alert conditions.

An alert expression is a condition (``value > threshold``): it returns nothing while the
alert is quiet, so "returns data" is checked on its *value* side. ``condition_values``
splits an expression at its top-level set operators (``and``, ``or``, ``unless``), takes
the left side of each top-level comparison, and unwraps ``absent(x)`` to ``x`` (``x``
returning data is what keeps ``absent`` quiet). The full expression is still sent to
Prometheus, so it must parse and evaluate too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
SET_OPERATORS = ("and", "or", "unless")
OPENERS, CLOSERS = "([{", ")]}"


def dashboard_targets(path: Path) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows included."""
    dashboard = json.loads(path.read_text())
    out = []
    for panel in all_panels(dashboard):
        out.extend((panel["title"], target["expr"]) for target in panel.get("targets", []))
    return out


def all_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return [p for p in panels if p.get("type") != "row"]


def render_grafana(expr: str, rate_interval: str) -> str:
    """Grafana's built-in interval variables, as Grafana would substitute them."""
    for name in ("__rate_interval", "__interval", "__range"):
        expr = expr.replace("${" + name + "}", rate_interval).replace("$" + name, rate_interval)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def alert_rules(path: Path) -> list[dict]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def adapter_queries(path: Path, job: str) -> list[tuple[str, str]]:
    """(metric name, PromQL) of each prometheus-adapter rule, its templates filled in for one job."""
    config = yaml.safe_load(path.read_text())
    rules = config["rules"]["custom"] if "rules" in config and "custom" in config["rules"] else config["rules"]
    out = []
    for rule in rules:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
        name = re.sub(rule["name"]["matches"], rule["name"]["as"], series)
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", f'job="{job}"')
            .replace("<<.GroupBy>>", "instance")
        )
        out.append((name, query))
    return out


def _top_level_tokens(expr: str) -> list[tuple[int, str]]:
    """(position, operator) of the comparisons and set operators outside any bracket or string."""
    found, depth, i, quote = [], 0, 0, ""
    while i < len(expr):
        ch = expr[i]
        if quote:
            i += 2 if ch == "\\" else 1
            quote = "" if ch == quote else quote
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            depth -= 1
        elif depth == 0:
            op = next((c for c in COMPARISONS if expr.startswith(c, i)), None)
            word = re.match(r"\b(and|or|unless)\b", expr[i:]) if (i == 0 or not _ident(expr[i - 1])) else None
            if op:
                found.append((i, op))
                i += len(op)
                continue
            if word:
                found.append((i, word.group(1)))
                i += len(word.group(1))
                continue
        i += 1
    return found


def _ident(ch: str) -> bool:
    return ch.isalnum() or ch in "_:"


def condition_values(expr: str) -> list[str]:
    """The value side of each operand of a condition: ``a > 1 and b < 2`` -> ``[a, b]``."""
    operands, start = [], 0
    tokens = _top_level_tokens(expr)
    for pos, op in [*tokens, (len(expr), "end")]:
        if op in SET_OPERATORS or op == "end":
            operands.append(expr[start:pos])
            start = pos + len(op)
    values = []
    for operand in operands:
        comparisons = [pos for pos, op in _top_level_tokens(operand) if op in COMPARISONS]
        value = (operand[: comparisons[0]] if comparisons else operand).strip()
        absent = re.fullmatch(r"absent(?:_over_time)?\s*\((.*)\)", value, re.S)
        values.append(absent.group(1).strip() if absent else value)
    return values
