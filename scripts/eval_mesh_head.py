#!/usr/bin/env python
"""Same as the installed `retinaface eval-mesh` command; `python scripts/eval_mesh_head.py --help` lists the options."""

import sys

from retinaface.cli.eval_mesh import main

if __name__ == "__main__":
    sys.exit(main())
