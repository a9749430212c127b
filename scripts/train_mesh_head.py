#!/usr/bin/env python
"""Same as the installed `retinaface train-mesh-head` command; `python scripts/train_mesh_head.py --help` lists the options."""

import sys

from retinaface.cli.train_mesh_head import main

if __name__ == "__main__":
    sys.exit(main())
