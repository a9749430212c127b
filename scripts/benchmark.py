#!/usr/bin/env python
"""Same as the installed `retinaface benchmark` command; `python scripts/benchmark.py --help` lists the options."""

import sys

from retinaface.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
