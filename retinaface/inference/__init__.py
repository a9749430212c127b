"""Images in, final faces out: the detector, test-time views (flip, scales, rotations, pixel budget) and the per-face stages."""
