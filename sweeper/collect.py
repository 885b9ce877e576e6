"""`python -m sweeper.collect`: the command lives in sweeper.results.collect."""

import sys

from .results.collect import main

if __name__ == "__main__":
    sys.exit(main())
