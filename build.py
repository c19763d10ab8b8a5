#!/usr/bin/env python3
"""Version-matrix images for verl / vLLM: `python build.py --help`. The logic lives in imagematrix/."""

import sys

from imagematrix.cli import main

if __name__ == "__main__":
    sys.exit(main())
