import torch

from retinaface.model.anchors import AnchorGenerator


def test_exact_anchors_on_tiny_grid():
    gen = AnchorGenerator(sizes_per_level=((4, 8), (16,)), strides=(8, 16))
    anchors = gen([(2, 3), (1, 1)])
    expected = torch.tensor(
        [
            # level 0: rows of 3 cells, sizes 4 and 8 per cell
            [4, 4, 4, 4], [4, 4, 8, 8], [12, 4, 4, 4], [12, 4, 8, 8], [20, 4, 4, 4], [20, 4, 8, 8],
            [4, 12, 4, 4], [4, 12, 8, 8], [12, 12, 4, 4], [12, 12, 8, 8], [20, 12, 4, 4], [20, 12, 8, 8],
            # level 1: one cell
            [8, 8, 16, 16],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(anchors, expected)


def test_counts_for_odd_image_size_and_cache():
    gen = AnchorGenerator(sizes_per_level=((16, 32), (64, 128), (256, 512)), strides=(8, 16, 32))
    anchors = gen.for_image_size(97, 131)
    # ceil(97/8)*ceil(131/8) + ceil(97/16)*ceil(131/16) + ceil(97/32)*ceil(131/32), two sizes each
    assert anchors.shape == ((13 * 17 + 7 * 9 + 4 * 5) * 2, 4)
    assert gen.for_image_size(97, 131) is anchors
    assert gen.for_image_size(96, 131) is not anchors
