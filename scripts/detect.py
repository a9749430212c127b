#!/usr/bin/env python
"""Same as the installed `retinaface detect` command; `python scripts/detect.py --help` lists the options."""

import sys

from retinaface.cli.detect import main

if __name__ == "__main__":
    sys.exit(main())
