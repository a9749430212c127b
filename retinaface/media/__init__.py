"""Reading media: still and animated images, videos and cameras, decoding ahead, bundled sample pictures."""
