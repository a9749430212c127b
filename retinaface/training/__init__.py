"""Training: the loop, samplers, optimisers, checkpoints and run folders."""
