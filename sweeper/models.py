"""`python -m sweeper.models prepare`: the command lives in sweeper.train.models."""

import sys

from .train.models import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
