"""3D face mesh (installed as ``retinaface.mesh``): template, face-shape prior, decoder, renderer, photo fitting."""
