"""`python -m sweeper.status`: the command lives in sweeper.results.status."""

import sys

from .results.status import main

if __name__ == "__main__":
    sys.exit(main())
