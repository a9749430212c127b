#!/usr/bin/env python
"""Same as the installed `retinaface export` command; `python scripts/export_onnx.py --help` lists the options."""

import sys

from retinaface.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
