"""Errors a user can cause and fix. Every LoraSmith CLI prints them as one line, without a traceback."""


class LoraSmithError(Exception):
    """A problem with the user's input: the message names what is wrong and how to fix it."""


class DatasetError(LoraSmithError):
    """A dataset folder that does not follow the expected layout."""


class LoraSmithWarning(UserWarning):
    """Something in the user's input that the run works around (an unknown sampler name, a LoRA layer the model
    lacks): every LoraSmith CLI prints it as one `warning:` line, without Python's file and line."""


def one_line_warnings() -> None:
    """Print LoraSmithWarnings as `warning: <message>`; other warnings keep Python's format."""
    import warnings

    if getattr(warnings.formatwarning, "one_line", False):
        return
    python_format = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, LoraSmithWarning):
            return f"warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    formatwarning.one_line = True
    warnings.formatwarning = formatwarning


def run_reporting_user_errors(run, cfg):
    """Call `run(cfg)`; a LoraSmithError becomes one `error:` line on stderr and exit status 2 (or the
    error's own `exit_code`, e.g. 130 after Ctrl-C); a Ctrl-C outside any handler says "interrupted".

    HYDRA_FULL_ERROR=1 re-raises it instead, for the traceback. Every `python -m` entry point uses this.
    """
    import os
    import sys

    full = os.environ.get("HYDRA_FULL_ERROR", "0") not in ("0", "", "false")
    if not full:  # HYDRA_FULL_ERROR=1 keeps Python's format, which says where a warning came from
        one_line_warnings()
    try:
        return run(cfg)
    except LoraSmithError as error:
        if full:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2))
    except KeyboardInterrupt:
        if full:
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)
