"""An override Hydra's grammar cannot read (a bare ~, an unmatched bracket) is one line that says how to quote
it, from every `python -m` entry point, before anything loads."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from data.override_grammar import quoted
from tests.test_cli import REPO


@pytest.mark.parametrize(("key", "value"), [("dataset.train_dir", "~/pictures"), ("x", "(1"), ("n", "it's")])
def test_the_suggested_quoting_parses_to_the_value_as_typed(key, value):
    shell_word = quoted(key, value)
    typed = shell_word[1:-1]  # what the shell passes on: the outer quotes removed
    (override,) = OverridesParser.create().parse_overrides([typed])
    assert override.value() == value


# python -m inference is wired as inference.xyz is (after its prompt quoting), and imports as much
@pytest.mark.parametrize("module", ["train", "data", "inference.xyz", "train.evaluate"])
def test_an_unreadable_override_is_one_line_naming_it(module, tmp_path):
    command = [sys.executable, "-m", module, "dataset.train_dir=~/pictures", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: dataset.train_dir=~/pictures: Hydra's override grammar cannot read this value (a ~, a bracket "
        "or a quote in it): quote the value, e.g. \"dataset.train_dir='~/pictures'\""
    ]
    assert not list(tmp_path.iterdir())  # nothing written
