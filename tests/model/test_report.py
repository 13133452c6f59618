import json
from pathlib import Path

from model.report import write_report


def test_a_dotted_name_keeps_its_dot(tmp_path: Path) -> None:
    write_report(tmp_path / "new" / "eval-x4-sharp-0.5", {"a": 1}, "# a\n")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["eval-x4-sharp-0.5.json", "eval-x4-sharp-0.5.md"]
    assert json.loads((tmp_path / "new" / "eval-x4-sharp-0.5.json").read_text()) == {"a": 1}


def test_no_markdown_writes_the_json_alone(tmp_path: Path) -> None:
    write_report(tmp_path / "bench", [1, 2])
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]
