"""`python -m sweeper.datasets`: the command lives in sweeper.data.catalogue."""

import sys

from .data.catalogue import main

if __name__ == "__main__":
    sys.exit(main())
