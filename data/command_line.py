"""What every `python -m` entry point checks on its command line before Hydra starts: overrides its grammar
can read (data/override_grammar.py), and a run folder it can make (data/output_folder.py)."""

from __future__ import annotations

from data.output_folder import FOLDER_KEYS, check_output_folder
from data.override_grammar import check_override_grammar


def check_command_line(argv: list[str], folder_keys: tuple[str, ...] = FOLDER_KEYS) -> None:
    """Exit with one `error:` line (status 2) at the first problem; `folder_keys` name the run folder."""
    check_override_grammar(argv)
    check_output_folder(argv, folder_keys)
