"""DESIGN's layering: the engine never imports the training stage, and the data stage imports neither."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

IMPORT_ALL = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, sys.argv[1] + "."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
print(" ".join(sorted({name.split(".")[0] for name in sys.modules if name.split(".")[0] in sys.argv[2:]})))
"""


@pytest.mark.slow  # imports every module in a subprocess (about 11 s); the source scan below stays fast
@pytest.mark.parametrize(
    ("package", "forbidden"), [("inference", ["train"]), ("data", ["train", "inference"])]
)
def test_a_stage_imports_no_later_stage(package, forbidden):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, package, *forbidden],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"{package} imports {result.stdout.strip()}"


def test_no_engine_module_imports_train_even_inside_a_function():
    import re

    pattern = re.compile(r"^\s*(from|import)\s+train\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "inference").rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert offenders == []
