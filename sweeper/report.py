"""`python -m sweeper.report`: the command lives in sweeper.results.report."""

import sys

from .results.report import main

if __name__ == "__main__":
    sys.exit(main())
