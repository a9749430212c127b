"""3D face mesh branch (graph-convolution decoder, PyTorch3D rendering). Not implemented yet: see issue 3."""
