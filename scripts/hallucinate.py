#!/usr/bin/env python
"""Same as the installed `retinaface hallucinate` command; `python scripts/hallucinate.py --help` lists the options."""

import sys

from retinaface.cli.hallucinate import main

if __name__ == "__main__":
    sys.exit(main())
