"""The sliding-window engine shared by evaluation and scene prediction: grid, blends, strip streaming."""

import pytest
import torch

from modeling_spectralmoe.inference.windows import (
    BLENDS, WindowGrid, column_blocks, sliding_window_scores, stream_window_scores, window_starts,
)


class _Output:
    def __init__(self, logits):
        self.logits = logits


class PositionDependentModel:
    """Scores that depend on where a pixel sits inside its window, so overlapping windows disagree."""

    def __init__(self):
        self.calls = 0

    def __call__(self, pixel_values):
        self.calls += 1
        height, width = pixel_values.shape[-2:]
        ramp = torch.arange(height).view(-1, 1) * 0.01 + torch.arange(width).view(1, -1) * 0.003
        return _Output(torch.cat([pixel_values[:, :1] + ramp, pixel_values[:, 1:2] * ramp], dim=1))


class ConstantModel:
    def __call__(self, pixel_values):
        return _Output(torch.full((pixel_values.shape[0], 2, *pixel_values.shape[-2:]), 0.375))


def reference_mean(model, pixel_values, crop, stride):
    """mmseg's slide inference, written out: flush-border grid, sums and counts over the whole array."""
    batch, _, height, width = pixel_values.shape
    rows = max(height - crop + stride - 1, 0) // stride + 1
    columns = max(width - crop + stride - 1, 0) // stride + 1
    sums, counts = None, torch.zeros(batch, 1, height, width)
    for row in range(rows):
        for column in range(columns):
            bottom, right = min(row * stride + crop, height), min(column * stride + crop, width)
            top, left = max(bottom - crop, 0), max(right - crop, 0)
            logits = model(pixel_values[:, :, top:bottom, left:right]).logits
            sums = logits.new_zeros(batch, logits.shape[1], height, width) if sums is None else sums
            sums[:, :, top:bottom, left:right] += logits
            counts[:, :, top:bottom, left:right] += 1
    return sums / counts


@pytest.mark.parametrize(
    "size, crop, stride, expected",
    [(100, 64, 48, [0, 36]), (64, 64, 48, [0]), (300, 512, 341, [0]), (1024, 512, 341, [0, 341, 512]),
     (1200, 512, 341, [0, 341, 682, 688])],
)
def test_window_starts_cover_the_image_and_end_flush(size, crop, stride, expected):
    starts = window_starts(size, crop, stride)
    assert starts == expected and starts[-1] + min(crop, size) == size


@pytest.mark.parametrize("size", [(1200, 1030), (700, 900)])
def test_mean_blend_is_mmseg_slide_inference_bit_for_bit(size):
    pixel_values = torch.randn(1, 2, *size, generator=torch.Generator().manual_seed(0))
    expected = reference_mean(PositionDependentModel(), pixel_values, 512, 341)
    actual = sliding_window_scores(PositionDependentModel(), pixel_values, 512, 341, "mean", batch_size=3)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("blend", BLENDS)
def test_constant_scores_stay_constant_everywhere(blend):
    scores = sliding_window_scores(ConstantModel(), torch.zeros(1, 3, 150, 170), 64, 40, blend)
    torch.testing.assert_close(scores, torch.full_like(scores, 0.375), rtol=0, atol=1e-6)


@pytest.mark.parametrize("blend", ["cosine", "gaussian", "center"])
def test_tapered_blends_differ_from_the_mean(blend):
    pixel_values = torch.randn(1, 2, 150, 170, generator=torch.Generator().manual_seed(1))
    mean = sliding_window_scores(PositionDependentModel(), pixel_values, 64, 40, "mean")
    other = sliding_window_scores(PositionDependentModel(), pixel_values, 64, 40, blend)
    assert (other - mean).abs().max() > 1e-3 and torch.isfinite(other).all()


@pytest.mark.parametrize("blend", BLENDS)
def test_strip_streaming_equals_whole_array_accumulation(blend):
    pixel_values = torch.randn(1, 2, 230, 170, generator=torch.Generator().manual_seed(2))
    grid = WindowGrid(230, 170, 64, 48, blend)
    model = PositionDependentModel()

    def read(top, left, height, width):
        return pixel_values[:, :, top : top + height, left : left + width]

    def score(windows):
        return model(windows).logits

    strips = list(stream_window_scores(score, read, grid, batch_size=2))
    assert len(strips) == len(grid.tops) and [row for row, _, _ in strips] == [0, *grid.tops[1:]]
    streamed = torch.cat([scores for _, scores, _ in strips], dim=2)
    whole = sliding_window_scores(model, pixel_values, 64, 48, blend, batch_size=2)
    assert torch.equal(streamed, whole)


@pytest.mark.parametrize("blend", BLENDS)
def test_column_blocks_and_token_grids_equal_the_whole_grid(blend):
    """Blocks of window columns (with their halo) tile the image and give the whole grid's scores bit for bit, at
    pixel resolution and on a grid 16 times coarser (pooled scores, as a ViT's token grid)."""
    pixel_values = torch.randn(1, 2, 224, 400, generator=torch.Generator().manual_seed(3))
    grids = (WindowGrid(224, 400, 64, 48, blend),)
    grids += (grids[0].coarsened(16),)
    model = PositionDependentModel()

    def score(windows):
        logits = model(windows).logits
        return logits, torch.nn.functional.avg_pool2d(logits, 16)

    def blended(block_grids):
        def read(top, left, height, width):
            left += block_grids[0].column_offset
            return pixel_values[:, :, top : top + height, left : left + width]

        strips = list(stream_window_scores(score, read, block_grids, batch_size=3))
        return [torch.cat([strip[level][1] for strip in strips], dim=2) for level in range(2)]

    whole = blended(grids)
    blocks = column_blocks(grids, 150)
    assert len(blocks) > 2 and [first for _, first, _ in blocks][1:] == [last for _, _, last in blocks][:-1]
    for block_grids, first, last in blocks:
        offset = block_grids[0].column_offset
        pixels, tokens = blended(block_grids)
        assert torch.equal(pixels[..., first - offset : last - offset], whole[0][..., first:last])
        columns = slice((first - offset) // 16, (last - offset) // 16)
        assert torch.equal(tokens[..., columns], whole[1][..., first // 16 : last // 16])
    with pytest.raises(ValueError, match="not multiples of 16"):
        WindowGrid(224, 400, 64, 40, blend).coarsened(16)


def test_windows_without_a_valid_pixel_are_skipped():
    pixel_values = torch.randn(1, 2, 128, 128)
    valid = torch.zeros(1, 128, 128, dtype=torch.bool)
    valid[:, :20, :20] = True  # only the top-left window (of 3 x 3 at 64/32) sees valid pixels
    model = PositionDependentModel()
    scores = sliding_window_scores(model, pixel_values, 64, 32, "mean", valid_mask=valid)
    assert model.calls == 1
    assert torch.isfinite(scores[..., :64, :64]).all() and scores[..., 64:, 64:].isnan().all()


def test_stride_larger_than_the_window_is_refused():
    with pytest.raises(ValueError, match="leaves gaps"):
        sliding_window_scores(ConstantModel(), torch.zeros(1, 3, 200, 200), 64, 80)
    with pytest.raises(ValueError, match="`blend` must be one of"):
        WindowGrid(100, 100, 64, 32, "median")
