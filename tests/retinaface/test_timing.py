from retinaface.utils.timing import interleaved_median_seconds


def test_interleaved_timing_alternates_blocks_and_counts_calls():
    order = []
    result = interleaved_median_seconds({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, runs=6, rounds=3, warmup=1)
    assert set(result) == {"a", "b"} and all(v >= 0 for v in result.values())
    # 3 rounds x (1 warm-up + 2 timed) per path, in alternating blocks a a a b b b a a a ...
    assert order == (["a"] * 3 + ["b"] * 3) * 3
