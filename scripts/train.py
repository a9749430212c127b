#!/usr/bin/env python
"""Same as the installed `retinaface train` command; `python scripts/train.py --help` lists the options."""

import sys

from retinaface.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
