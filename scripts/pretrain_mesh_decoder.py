#!/usr/bin/env python
"""Pre-train the mesh decoder on faces sampled from the face-shape prior (mesh/assets/face_prior.npz).

The latent's first entries are the prior's identity coefficients (N(0, 1)) and expression weights
([0, 1], a few active per face); the decoder learns to reproduce those faces (L1 on vertices and normals;
colours stay the template's). Writes mesh/assets/prior_decoder.safetensors (derived from the ICT Face
Model, MIT: see mesh/assets/NOTICE.ict) and prints the error on held-out prior faces.

    python scripts/pretrain_mesh_decoder.py --steps 1500 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=50, help="write a snapshot (and print its held-out error) every this many steps")
    parser.add_argument("--output", type=Path, default=None, help="default: the package's mesh/assets/prior_decoder.safetensors")
    args = parser.parse_args(argv)
    import torch
    from safetensors.torch import save_file

    from retinaface.outputs.atomic import atomic_write
    from retinaface.mesh.decoder import PRIOR_DECODER_PATH, MeshDecoder, pretrain_on_prior, prior_reconstruction_error
    from retinaface.mesh.prior import load_prior
    from retinaface.utils.resources import package_path

    output = args.output or Path(str(package_path("retinaface.mesh", PRIOR_DECODER_PATH)))
    prior = load_prior()
    torch.manual_seed(args.seed)
    decoder = MeshDecoder()
    start = time.perf_counter()

    def save(step: int) -> dict[str, float]:
        # snapshots along the way: a run cut short still leaves its latest weights (and their error)
        error = prior_reconstruction_error(decoder.eval(), prior, seed=args.seed + 12345)
        decoder.train()
        state = {k: v.detach().contiguous() for k, v in decoder.state_dict().items()}
        metadata = {
            "prior": prior.provenance, "steps": str(step + 1), "batch_size": str(args.batch_size), "seed": str(args.seed),
            "latent_layout": json.dumps({"identity": prior.num_identity, "expression": prior.num_expression}),
            "held_out_error": json.dumps(error),
        }
        atomic_write(output, lambda tmp: save_file(state, str(tmp), metadata=metadata))
        print(json.dumps({"step": step + 1, "seconds": round(time.perf_counter() - start), "held_out_error": {k: round(v, 5) for k, v in error.items()}}), flush=True)
        return error

    pretrain_on_prior(decoder, prior, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, log_every=args.save_every, callback=save)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
