"""Command-line entry points, installed as the ``retinaface`` console command.

``retinaface detect|train|benchmark|export|eval-mesh|train-mesh-head|hallucinate [options]``; each subcommand's ``--help`` lists its options.
The files in the repository's ``scripts/`` folder call the same ``main`` functions.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "detect": ("retinaface.cli.detect", "detect faces in images, folders, videos or a camera"),
    "train": ("retinaface.cli.train", "train on WIDER FACE or a synthetic WIDER-format set (one device or torchrun)"),
    "benchmark": ("retinaface.cli.benchmark", "WIDER FACE val average precision with the official protocol"),
    "export": ("retinaface.cli.export", "export weights to ONNX for the onnxruntime backend"),
    "eval-mesh": ("retinaface.cli.eval_mesh", "mesh head errors against the true render parameters of a synthetic set"),
    "train-mesh-head": ("retinaface.cli.train_mesh_head", "train the RoI mesh head of frozen detector weights on synthetic faces"),
    "hallucinate": ("retinaface.cli.hallucinate", "hallucinated faces: gradient ascent on noise until a chosen output responds"),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``retinaface <command> [options]`` to the command's ``main``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        width = max(len(name) for name in COMMANDS)
        lines = [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
        print("usage: retinaface {" + ",".join(COMMANDS) + "} [options]\n\ncommands:\n" + "\n".join(lines))
        print("\n'retinaface <command> --help' lists the options of one command.")
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"error: unknown command {args[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return module.main(args[1:])
