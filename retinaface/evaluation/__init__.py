"""Measuring the detector: the WIDER FACE protocol and benchmark, mesh accuracy and mesh-head errors, jitter."""
