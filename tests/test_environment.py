"""The conda environment and the pip package declare exactly the same pins."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _normalise(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower()


def test_environment_yml_pins_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_normalise(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    lines = (REPO / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    conda_pip = {_normalise(line.strip()[2:]) for line in lines[start + 1 :] if line.strip().startswith("- ")}
    assert conda_pip == declared
    assert all("==" in r for r in declared), "every dependency must be pinned exactly"
    assert "python=3.11" in {line.strip().lstrip("- ") for line in lines}
