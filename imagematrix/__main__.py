"""`python -m imagematrix`: build.py's command line from an installed package, run in a checkout of the project's
data (matrix.yaml, knowledge/, dockerfiles/, locks/: model/paths.ROOT)."""

import sys

from imagematrix.cli import main

if __name__ == "__main__":
    sys.exit(main())
