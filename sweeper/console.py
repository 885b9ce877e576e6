"""What reaches the terminal: one line per point (its result), the planning lines, progress bars on
long work, warnings. The rest - Hydra's per-job lines ("#3 : dataset=..."), transformers' weight
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


def route_library_output(verbose: bool) -> None:
    """transformers' log lines into the job's log files (the root logger's file handlers, which
    Hydra's job logging sets up), its progress bars off; as it was when verbose or without a file."""
    import transformers.utils.logging as hf_logging

    if verbose:
        hf_logging.enable_default_handler()
        hf_logging.enable_progress_bar()
        return
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if not files:
        return  # nowhere else to keep them: leave them on the terminal
    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    library = hf_logging.get_logger("transformers")
    for handler in list(library.handlers):  # the previous job's file (Hydra's basic launcher: one process)
        if isinstance(handler, logging.FileHandler) and handler not in files:
            hf_logging.remove_handler(handler)
    for handler in files:
        if handler not in library.handlers:
            hf_logging.add_handler(handler)
