"""Small shared helpers: package resources, seeded randomness, signals, timing, torchrun set-up."""
