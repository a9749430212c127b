"""WIDER FACE and synthetic datasets. Sample media for the demo live in ``datasets/samples``."""
