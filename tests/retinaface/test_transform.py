import torch

from retinaface.model.transform import ImagePreprocessor


def test_mean_subtraction_padding_and_sizes():
    pre = ImagePreprocessor(pixel_mean_bgr=(104.0, 117.0, 123.0), size_divisible=32)
    a = torch.full((3, 10, 20), 200, dtype=torch.uint8)
    b = torch.zeros(3, 40, 5, dtype=torch.uint8)
    batch, sizes, scales, _ = pre([a, b])
    assert batch.shape == (2, 3, 64, 32)
    assert sizes == [(10, 20), (40, 5)] and scales == [1.0, 1.0]
    assert torch.equal(batch[0, :, 0, 0], torch.tensor([96.0, 83.0, 77.0]))
    assert torch.equal(batch[1, :, 0, 0], torch.tensor([-104.0, -117.0, -123.0]))
    assert batch[0, :, 10:, :].abs().sum() == 0 and batch[0, :, :, 20:].abs().sum() == 0  # padding = mean colour


def test_resize_and_map_back_are_inverse():
    pre = ImagePreprocessor(pixel_mean_bgr=(0.0, 0.0, 0.0), max_size=100)
    batch, sizes, scales, targets = pre(
        [torch.zeros(3, 200, 400)], [{"boxes": torch.tensor([[40.0, 20.0, 120.0, 100.0]]), "landmarks": torch.ones(1, 5, 2) * 8}]
    )
    assert sizes == [(50, 100)] and scales == [0.25]
    assert torch.equal(targets[0]["boxes"], torch.tensor([[10.0, 5.0, 30.0, 25.0]]))
    detections = [{"boxes": torch.tensor([[10.0, 5.0, 30.0, 25.0], [-3.0, 45.0, 110.0, 60.0]]), "landmarks": torch.ones(2, 5, 2)}]
    mapped = pre.map_back(detections, scales, [(200, 400)])[0]
    assert torch.equal(mapped["boxes"][0], torch.tensor([40.0, 20.0, 120.0, 100.0]))
    assert torch.equal(mapped["boxes"][1], torch.tensor([0.0, 180.0, 400.0, 200.0]))  # clipped to the image
    assert torch.equal(mapped["landmarks"], torch.full((2, 5, 2), 4.0))
