#!/usr/bin/env python
"""Plot a training run: loss terms per step, validation AP per epoch and, on synthetic sets, the mesh head's
errors against the true render parameters per epoch (from metrics.jsonl / validation.jsonl).

  python scripts/plot_training.py runs/synthetic-train --output runs/synthetic-train/curves.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="training output folder")
    parser.add_argument("--output", type=Path, help="PNG to write (default: <run>/curves.png)")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    metrics = args.run / "metrics.jsonl"
    if not metrics.is_file():
        print(f"error: {metrics} not found; is {args.run} a training output folder?", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retinaface.outputs.atomic import atomic_write

    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    validation_file = args.run / "validation.jsonl"
    validation = [json.loads(line) for line in validation_file.read_text().splitlines()] if validation_file.is_file() else []
    with_mesh = any("mesh_rotation_deg" in v for v in validation)
    figure, axes = plt.subplots(1, 3 if with_mesh else 2, figsize=(18 if with_mesh else 12, 4.2))
    losses, aps = axes[0], axes[1]
    epochs = [r["epoch"] for r in rows]
    for key in ("loss", "loss_cls", "loss_box", "loss_landmarks", "loss_pixel", "loss_mesh_landmarks"):
        if key in rows[0]:
            losses.plot(epochs, [r[key] for r in rows], label=key, lw=1)
    losses.set_yscale("log")
    losses.set_xlabel("epoch")
    losses.set_title("training loss (weighted terms)")
    losses.legend()
    losses.grid(alpha=0.3)
    for key in ("easy", "medium", "hard"):
        aps.plot([v["epoch"] for v in validation], [v[key] for v in validation], marker="o", label=key)
    aps.set_ylim(0, 1)
    aps.set_xlabel("epoch")
    aps.set_title("validation AP (WIDER protocol)")
    aps.legend()
    aps.grid(alpha=0.3)
    if with_mesh:
        mesh = axes[2]
        rows_mesh = [v for v in validation if "mesh_rotation_deg" in v]
        for key, colour in (("mesh_rotation_deg", "C0"), ("mesh_light_deg", "C1")):
            epochs_mesh = [v["epoch"] for v in rows_mesh]
            mesh.plot(epochs_mesh, [v[key] for v in rows_mesh], marker="o", color=colour, label=key[5:].replace("_deg", " (head)"))
            mesh.plot(epochs_mesh, [v[f"{key}_zero"] for v in rows_mesh], ls="--", marker="x", color=colour, label=key[5:].replace("_deg", " (zero coefficients)"))
        mesh.set_ylim(bottom=0)
        mesh.set_xlabel("epoch")
        mesh.set_ylabel("median error (degrees)")
        mesh.set_title("mesh head vs synthetic truth (val detections)")
        mesh.legend()
        mesh.grid(alpha=0.3)
    figure.suptitle(args.title or str(args.run))
    figure.tight_layout()
    output = args.output or args.run / "curves.png"
    atomic_write(output, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
