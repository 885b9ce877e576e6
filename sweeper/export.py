"""`python -m sweeper.export`: the command lives in sweeper.results.export."""

import sys

from .results.export import main

if __name__ == "__main__":
    sys.exit(main())
