"""The detect loop: frames from any source through the detector and its per-face stages into the outputs."""
