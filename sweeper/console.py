"""What reaches the terminal: one line per point (its result), the planning lines, progress bars on
long work, warnings (transformers': errors). The rest - Hydra's per-job lines ("#3 : dataset=..."), transformers' weight
loading bars and LOAD REPORT tables (a new classifier head is reported as MISSING, as it must be) -
goes to the job's log file. `sweeper.verbose=true` brings it all back to the terminal.

conf/config.yaml puts TerminalFilter on Hydra's console handlers; point_task calls
route_library_output once per point.
"""

from __future__ import annotations

import logging


class TerminalFilter(logging.Filter):
    """On a console handler: warnings and errors always, the INFO chatter only when verbose."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__()
        self.verbose = bool(verbose)

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.levelno >= logging.WARNING


class _TerminalErrors(logging.StreamHandler):
    """transformers' errors, which still reach the terminal when its other lines go to the log file."""


def route_library_output(verbose: bool) -> None:
    """transformers' log lines into the job's log files (the root logger's file handlers, which
    Hydra's job logging sets up), its errors also on the terminal, its progress bars off. Its
    warnings stay in the file: the LOAD REPORT of every classifier head is one. As it was when
    verbose or without a log file."""
    import transformers.utils.logging as hf_logging

    library = hf_logging.get_logger("transformers")
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for handler in list(library.handlers):  # what an earlier point of this process added
        if isinstance(handler, _TerminalErrors) or (isinstance(handler, logging.FileHandler) and handler not in files):
            hf_logging.remove_handler(handler)
    if verbose or not files:  # verbose, or nowhere else to keep them: the terminal, as transformers does
        hf_logging.enable_default_handler()
        hf_logging.enable_progress_bar()
        return
    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    hf_logging.disable_propagation()  # under CI=true transformers hands its lines to the root logger too
    errors = _TerminalErrors()
    errors.setLevel(logging.ERROR)
    hf_logging.add_handler(errors)
    for handler in files:
        if handler not in library.handlers:
            hf_logging.add_handler(handler)
