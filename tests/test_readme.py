"""The README's two setup commands stay true: CI runs the test one verbatim,
and the main one runs train.py on the defaults."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_has_the_two_setup_commands():
    main, test = commands()
    assert main == "pip install -c constraints.txt -e . && python train.py"
    assert test == 'pip install -c constraints.txt -e ".[test]" && python -m pytest -q'


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test = commands()[1].replace("pip install ", "pip install -q ")
    assert test in ci
