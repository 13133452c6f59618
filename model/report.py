"""Where a measurement's report goes: ``OUT.json`` beside ``OUT.md`` (stdlib only, so benchmarks start fast)."""

from __future__ import annotations

import json
from pathlib import Path


def report_path(out: str | Path, suffix: str) -> Path:
    """``OUT`` + ``suffix`` appended, not substituted: ``eval-x4-sharp-0.5`` keeps its ``.5`` (``with_suffix``
    would drop it)."""
    out = Path(out)
    return out.parent / f"{out.name}{suffix}"


def write_report(out: str | Path, data: object, markdown: str | None = None, indent: int = 2) -> None:
    """``OUT.json`` (and ``OUT.md`` when given), the folder made if missing."""
    json_path = report_path(out, ".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=indent) + "\n")
    if markdown is not None:
        report_path(out, ".md").write_text(markdown)
