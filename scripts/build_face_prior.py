#!/usr/bin/env python
"""Build mesh/assets/face_prior.npz: the ICT Face Model mapped onto the template's 468-vertex topology.

Reads ``ict_face_area.npz`` (the ICT Face Model's face area; MIT, (c) 2020 USC ICT; by default from the
shared data folder beside the checkout or $RETINAFACE_SHARED_DATA, never committed here) and writes the derived linear prior (mean,
identity and expression modes in template units and frame). See ``retinaface.mesh.prior``.

    python scripts/build_face_prior.py [--ict ../shared/data/ict_face_model/ict_face_area.npz]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from retinaface.outputs.atomic import atomic_write
from retinaface.mesh.prior import PRIOR_PATH, build_prior_from_ict
from retinaface.mesh.template import load_template

SHARED_DATA = Path(os.environ.get("RETINAFACE_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
DEFAULT_ICT = SHARED_DATA / "ict_face_model" / "ict_face_area.npz"
PROVENANCE = (
    "ICT Face Model (face area of the light model; MIT licence, (c) 2020 USC Institute for Creative Technologies; "
    "see NOTICE.ict) mapped onto the mediapipe face-mesh topology of face_template.npz by scripts/build_face_prior.py: "
    "similarity on the 68 Multi-PIE landmarks, thin-plate-spline warp, closest point on the warped surface"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ict", type=Path, default=DEFAULT_ICT, help="path to ict_face_area.npz (default: %(default)s)")
    parser.add_argument("--identity", type=int, default=60, help="identity modes kept, of 100 (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path(str(PRIOR_PATH)), help="asset to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.ict.is_file():
        print(f"error: {args.ict} not found (the ICT Face Model lives in the shared data folder)", file=sys.stderr)
        return 2
    arrays = build_prior_from_ict(args.ict, load_template().vertices.numpy().astype(np.float64), num_identity=args.identity)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, provenance=np.str_(PROVENANCE), **arrays)

    atomic_write(args.output, write)
    distance = arrays["surface_distance"]
    print(
        f"wrote {args.output}: {len(arrays['identity'])} identity and {len(arrays['expression'])} expression modes, "
        f"{arrays['centimetres_per_unit']:.3f} cm per template unit; template-to-ICT surface distance median "
        f"{np.median(distance):.4f}, max {distance.max():.4f} template units"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
