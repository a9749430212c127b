import cv2
import pytest
import torch

from retinaface.utils.threads import opencv_threads, torch_threads


@pytest.mark.parametrize("threads, get, set_", [
    (torch_threads, torch.get_num_threads, torch.set_num_threads),
    (opencv_threads, cv2.getNumThreads, cv2.setNumThreads),
])
def test_thread_counts_hold_inside_the_block_and_come_back_after_it_even_on_errors(threads, get, set_):
    before = get()
    try:
        set_(2)
        with threads(1):
            assert get() == 1
        assert get() == 2
        with pytest.raises(RuntimeError), threads(3):
            assert get() == 3
            raise RuntimeError("inside")
        assert get() == 2
        with threads(None):  # None: as they are
            assert get() == 2
    finally:
        set_(before)
