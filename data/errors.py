"""Errors a user can cause and fix. Every LoraSmith CLI prints them as one line, without a traceback."""


class LoraSmithError(Exception):
    """A problem with the user's input: the message names what is wrong and how to fix it."""


class DatasetError(LoraSmithError):
    """A dataset folder that does not follow the expected layout."""


def run_reporting_user_errors(run, cfg):
    """Call `run(cfg)`; a LoraSmithError becomes one `error:` line on stderr and exit status 2 (or the
    error's own `exit_code`, e.g. 130 after Ctrl-C); a Ctrl-C outside any handler says "interrupted".

    HYDRA_FULL_ERROR=1 re-raises it instead, for the traceback. Every `python -m` entry point uses this.
    """
    import os
    import sys

    full = os.environ.get("HYDRA_FULL_ERROR", "0") not in ("0", "", "false")
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
