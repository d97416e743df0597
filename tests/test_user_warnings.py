"""A warning about the user's input is one `warning:` line; other warnings keep Python's format."""

from __future__ import annotations

import warnings

from data.errors import LoraSmithWarning, one_line_warnings


def test_lorasmith_warnings_print_as_one_line_and_others_as_python_prints_them(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # put back after the test
    python_line = warnings.formatwarning("deprecated", DeprecationWarning, "lib.py", 7)
    one_line_warnings()
    one_line_warnings()  # installing twice does not wrap twice
    assert warnings.formatwarning("unknown sampler 'Z'", LoraSmithWarning, "x.py", 3) == (
        "warning: unknown sampler 'Z'\n"
    )
    assert warnings.formatwarning("deprecated", DeprecationWarning, "lib.py", 7) == python_line
    assert "lib.py:7" in python_line
