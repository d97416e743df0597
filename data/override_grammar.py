"""Command-line overrides that Hydra's grammar cannot read get one line saying how to quote them.

Hydra rejects a bare `~`, an unmatched bracket or quote in a value with a parser exception and a link; the
fix is almost always quoting, e.g. `"dataset.train_dir='~/pictures'"` (the `~` is then expanded by us).
"""

from __future__ import annotations

import os
import sys


def quoted(key: str, value: str) -> str:
    """How to type `key=value` in a shell so that Hydra takes the value as a string."""
    if "'" in value:
        return f"'{key}=\"{value}\"'"
    return f"\"{key}='{value}'\""


def check_override_grammar(argv: list[str]) -> None:
    """Exit with one `error:` line (status 2) at the first override Hydra cannot parse, before Hydra starts.

    With HYDRA_FULL_ERROR=1 Hydra reports it itself, with its parser's details."""
    if os.environ.get("HYDRA_FULL_ERROR", "0") not in ("0", "", "false"):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:  # flags (-m, --cfg job) and their values
            continue
        try:
            parser.parse_overrides([arg])
        except OverrideParseException:
            key, _, value = arg.partition("=")
            print(
                f"error: {arg}: Hydra's override grammar cannot read this value (a ~, a bracket or a quote in "
                f"it): quote the value, e.g. {quoted(key, value)}",
                file=sys.stderr,
            )
            sys.exit(2)
