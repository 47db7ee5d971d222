"""The sliding-window engine: one window grid, one set of blend weights, one accumulator, for evaluation (whole arrays
in memory) and scene prediction (strips of rows streamed out as they are final).

Windows follow mmseg's grid: starts every `stride` pixels, the last window flush with the border, so every pixel is
covered. Blends:
- `"mean"`: every window weighs 1 (mmseg's sums / counts, the paper's protocol);
- `"cosine"`: Hann ramps over the overlap, only on sides that have a neighbouring window (edges of the image keep
  full weight, so no pixel gets a vanishing total weight);
- `"gaussian"`: a Gaussian of the distance to the window's centre (sigma = window / 4), flat toward image edges;
- `"center"`: each pixel takes the window whose centre is nearest along each axis (no averaging at all).

A model may score each window at several resolutions at once (pixels, and its 16-px token grid for the expert routing
maps): each resolution has its own grid, the pixel grid coarsened by an integer factor, and its own accumulator; strips
of every resolution are handed out together.
"""

import copy
import math
from collections.abc import Callable, Iterator

import torch

BLENDS = ("mean", "cosine", "gaussian", "center")
GAUSSIAN_SIGMA_FRACTION = 0.25


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering `size` pixels (the last window is flush with the border)."""
    if size <= window:
        return [0]
    count = math.ceil((size - window) / stride) + 1
    return [min(index * stride, size - window) for index in range(count)]


def check_window_settings(window: int, stride: int, blend: str = "mean") -> None:
    """Clear errors for settings that would leave pixels unpredicted or blend nothing."""
    if blend not in BLENDS:
        raise ValueError(f"`blend` must be one of {BLENDS}, found {blend!r}.")
    if window < 1 or stride < 1:
        raise ValueError(f"Window ({window}) and stride ({stride}) must be positive.")
    if stride > window:
        raise ValueError(
            f"A stride of {stride} px with {window}-px windows leaves gaps between windows that no window predicts; "
            f"use a stride of at most {window} (the paper uses {round(window * 2 / 3)} for {window})."
        )


def _ramp(length: int) -> torch.Tensor:
    """Hann ramp from near 0 to near 1 over `length` pixels, strictly positive."""
    return 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(length, dtype=torch.float64) + 0.5) / length)


def axis_weights(starts: list[int], size: int, window: int, blend: str) -> list[torch.Tensor]:
    """One weight profile (float64, length = the window's extent) per window along one axis."""
    profiles = []
    for index, start in enumerate(starts):
        extent = min(window, size - start)
        weights = torch.ones(extent, dtype=torch.float64)
        previous = starts[index - 1] if index > 0 else None
        following = starts[index + 1] if index + 1 < len(starts) else None
        if blend == "cosine":
            if previous is not None:  # overlap with the previous window: [start, previous + window)
                overlap = previous + window - start
                weights[:overlap] = torch.minimum(weights[:overlap], _ramp(overlap))
            if following is not None:
                overlap = start + extent - following
                weights[extent - overlap :] = torch.minimum(weights[extent - overlap :], _ramp(overlap).flip(0))
        elif blend == "gaussian":
            offsets = torch.arange(extent, dtype=torch.float64) - (extent - 1) / 2
            profile = torch.exp(-0.5 * (offsets / (GAUSSIAN_SIGMA_FRACTION * window)) ** 2)
            centre = extent // 2
            if previous is None:
                profile[:centre] = 1.0
            if following is None:
                profile[centre:] = 1.0
            weights = profile
        elif blend == "center":
            centre = start + extent / 2
            low = 0 if previous is None else (previous + min(window, size - previous) / 2 + centre) / 2
            high = size if following is None else (centre + following + min(window, size - following) / 2) / 2
            positions = torch.arange(start, start + extent, dtype=torch.float64) + 0.5
            weights = ((positions >= low) & (positions < high)).to(torch.float64)
        profiles.append(weights)
    return profiles


class WindowGrid:
    """Every window of an image: `(top, left, height, width)` row-major, with its 2-D blend weights.

    Args:
        height, width (`int`): image size.
        window, stride (`int`): window side and step.
        blend (`str`): one of `BLENDS`.
    """

    def __init__(self, height: int, width: int, window: int, stride: int, blend: str = "mean"):
        check_window_settings(window, stride, blend)
        self.height, self.width, self.window, self.stride, self.blend = height, width, window, stride, blend
        self.tops, self.lefts = window_starts(height, window, stride), window_starts(width, window, stride)
        self.row_weights = axis_weights(self.tops, height, window, blend)
        self.column_weights = axis_weights(self.lefts, width, window, blend)
        self.column_offset = 0  # image column of this grid's column 0 (non-zero for a column block)

    def coarsened(self, factor: int) -> "WindowGrid":
        """The same windows on a grid `factor` times coarser (e.g. a ViT's token grid): every size and start must be
        a multiple of `factor`, so that each window covers whole cells and cells of overlapping windows coincide."""
        sizes = {"height": self.height, "width": self.width, "window": self.window, "stride": self.stride}
        misaligned = {name: value for name, value in sizes.items() if value % factor}
        if misaligned:
            raise ValueError(f"Window grid settings {misaligned} are not multiples of {factor}.")
        coarse = WindowGrid(self.height // factor, self.width // factor, self.window // factor,
                            self.stride // factor, self.blend)
        starts = ([top // factor for top in self.tops], [left // factor for left in self.lefts])
        if (coarse.tops, coarse.lefts) != starts:
            raise ValueError(f"The window starts {self.tops}, {self.lefts} are not multiples of {factor}.")
        return coarse

    def __len__(self) -> int:
        return len(self.tops) * len(self.lefts)

    def rows(self) -> Iterator[list[tuple[int, int, int, int]]]:
        """Windows grouped by row of windows, each `(top, left, height, width)`."""
        for top in self.tops:
            extent = min(self.window, self.height - top)
            yield [(top, left, extent, min(self.window, self.width - left)) for left in self.lefts]

    def weights(self, top: int, left: int) -> torch.Tensor:
        """Blend weights (h, w) of the window starting at (top, left), float32."""
        rows = self.row_weights[self.tops.index(top)]
        columns = self.column_weights[self.lefts.index(left)]
        return torch.outer(rows, columns).float()

    def column_ranges(self, max_width: int) -> list[tuple[int, int, int, int]]:
        """Splits the grid into blocks of whole window columns at most about `max_width` pixels wide, so that an
        accumulator spans a block instead of the image. Neighbouring blocks share the windows that reach across
        their border (a halo of about one window). Each block is `(start, end, first, last)`: window columns
        `[start, end)` and the image columns `[first, last)` all of whose windows lie in the block; these tile the
        image, and their blended scores equal those of the whole grid bit for bit (same windows, weights and
        summation order). One block when the image fits."""
        lefts, window = self.lefts, self.window
        per_block = 1 + max(max_width - window, 0) // self.stride
        if len(lefts) <= per_block:
            return [(0, len(lefts), 0, self.width)]
        blocks, start, end, first = [], 0, 0, 0
        while end < len(lefts):
            end = min(max(start + per_block, end + 1), len(lefts))
            last = self.width if end == len(lefts) else lefts[end]  # where the next block's windows begin
            blocks.append((start, end, first, last))
            first, start = last, end
            while start > 0 and lefts[start - 1] + window > first:  # every window that reaches the next columns
                start -= 1
        return blocks

    def column_block(self, start: int, end: int) -> "WindowGrid":
        """The grid of window columns `[start, end)` only, in coordinates starting at the block's first column
        (`column_offset` in the image), with the whole grid's weights."""
        if (start, end) == (0, len(self.lefts)):
            return self
        block = copy.copy(self)
        offset = self.lefts[start]
        block.lefts = [left - offset for left in self.lefts[start:end]]
        block.column_weights = self.column_weights[start:end]
        block.width = block.lefts[-1] + len(block.column_weights[-1])
        block.column_offset = self.column_offset + offset
        return block


def column_blocks(grids: tuple[WindowGrid, ...], max_width: int) -> list[tuple[tuple[WindowGrid, ...], int, int]]:
    """Column blocks (see `WindowGrid.column_ranges`) of a pixel grid and its coarsenings (which have the same
    window columns): `(block grids, first, last)`, `first` and `last` in the pixel grid's image columns."""
    return [(tuple(grid.column_block(start, end) for grid in grids), first, last)
            for start, end, first, last in grids[0].column_ranges(max_width)]


class StripAccumulator:
    """Weighted sums of window scores over a band of rows only: the rows above the next window row are final and
    handed out (`pop_rows_above`), so memory does not grow with the image's height.

    Args:
        buffer_height (`int`): rows the buffer holds: at least one window; the image height for a whole-array
            accumulator (same sums, same order, so the same result).
        width (`int`): image width.
    """

    def __init__(self, buffer_height: int, width: int):
        self.buffer_height, self.width = buffer_height, width
        self.sums = self.weights = None  # allocated at the first window, when the score shape is known
        self.top = 0  # image row of buffer row 0

    def add(self, scores: torch.Tensor, weights: torch.Tensor, top: int, left: int) -> None:
        """Adds window scores (B, K, h, w) with weights (h, w) at image position (top, left)."""
        if self.sums is None:
            self.sums = scores.new_zeros(*scores.shape[:2], self.buffer_height, self.width)
            self.weights = weights.new_zeros(self.buffer_height, self.width)
        height, width = weights.shape
        rows = slice(top - self.top, top - self.top + height)
        self.sums[:, :, rows, left : left + width] += scores * weights
        self.weights[rows, left : left + width] += weights

    def pop_rows_above(self, row: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """Final rows `[self.top, row)`: `(first_row, scores (B, K, n, W), weights (n, W))`, scores normalised
        (NaN where no window contributed; `None` for both while no window was added). The buffer then starts at
        `row`."""
        first_row, count = self.top, row - self.top
        self.top = row
        if self.sums is None:
            return first_row, None, None
        scores, weights = self.sums[:, :, :count] / self.weights[:count], self.weights[:count].clone()
        # Shift the remaining rows up in place: a new buffer per strip would double the peak memory.
        kept = self.buffer_height - count
        self.sums[:, :, :kept] = self.sums[:, :, count:].clone()
        self.sums[:, :, kept:] = 0
        self.weights[:kept] = self.weights[count:].clone()
        self.weights[kept:] = 0
        return first_row, scores, weights


def stream_window_scores(
    score_windows: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    read_window: Callable[[int, int, int, int], torch.Tensor | None],
    grid: WindowGrid | tuple[WindowGrid, ...],
    batch_size: int = 1,
    buffer_height: int | None = None,
) -> Iterator[tuple]:
    """Blended scores of an image, yielded strip by strip as rows become final: `(first_row, scores, weights)` (see
    `StripAccumulator.pop_rows_above`).

    Args:
        score_windows: windows (N, C, h, w) -> scores (N, K, h, w), or a tuple of scores, one per grid of `grid`.
        read_window: `(top, left, height, width)` -> the window of every image, (B, C, h, w), or `None` to skip it
            (no valid pixel).
        grid: the windows and their weights; or a tuple of grids, the pixel grid first and then coarsenings of it
            (`WindowGrid.coarsened`), one per output of `score_windows`: each strip is then a tuple of
            `(first_row, scores, weights)`, one per grid, each in its grid's rows.
        batch_size: window positions per `score_windows` call (each with B images).
        buffer_height: rows accumulated at once; one window (the least memory) by default.
    """
    grids = grid if isinstance(grid, tuple) else (grid,)
    pixel_grid = grids[0]
    factors = [pixel_grid.window // coarse.window for coarse in grids]
    buffer_height = buffer_height or min(pixel_grid.window, pixel_grid.height)
    accumulators = [StripAccumulator(buffer_height // factor, g.width) for g, factor in zip(grids, factors)]

    def pop_rows_above(row: int):
        strips = tuple(a.pop_rows_above(row // factor) for a, factor in zip(accumulators, factors))
        return strips if isinstance(grid, tuple) else strips[0]

    for row in pixel_grid.rows():
        row_top = row[0][0]
        if row_top > accumulators[0].top + buffer_height - pixel_grid.window:  # the row would not fit
            yield pop_rows_above(row_top)
        windows = [(position, read_window(*position)) for position in row]
        windows = [(position, window) for position, window in windows if window is not None]
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            for ((top, left, _, _), _), outputs in zip(chunk, _score_alike(score_windows, [w for _, w in chunk])):
                for accumulator, g, factor, scores in zip(accumulators, grids, factors, outputs):
                    weights = g.weights(top // factor, left // factor).to(scores)
                    accumulator.add(scores, weights, top // factor, left // factor)
    yield pop_rows_above(pixel_grid.height)


def _score_alike(score_windows, windows: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """Scores of windows (each (B, C, h, w)) as a tuple per window, one call per group of equal shapes (border windows
    of images smaller than a window may differ)."""
    scores = [None] * len(windows)
    by_shape = {}
    for index, window in enumerate(windows):
        by_shape.setdefault(tuple(window.shape), []).append(index)
    for indices in by_shape.values():
        outputs = score_windows(torch.cat([windows[index] for index in indices]))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        per_window = zip(*(output.split(windows[indices[0]].shape[0]) for output in outputs))
        for index, window_scores in zip(indices, per_window):
            scores[index] = window_scores
    return scores


@torch.no_grad()
def sliding_window_scores(
    model,
    pixel_values: torch.Tensor,
    window: int = 512,
    stride: int = 341,
    blend: str = "mean",
    batch_size: int = 1,
    valid_mask: torch.Tensor | None = None,
    autocast_dtype: torch.dtype | None = None,
    **model_kwargs,
) -> torch.Tensor:
    """Per-class scores (B, K, H, W) of normalised images (B, C, H, W) by blended sliding windows, all in memory.

    Args:
        model: a segmentation model in eval mode whose output has `logits` at the window's resolution.
        window, stride, blend: the window grid and blend (see the module docstring).
        batch_size: window positions per forward pass (each with the B images).
        valid_mask (`torch.BoolTensor` of shape `(B, H, W)`, *optional*): window positions with no valid pixel in
            any image are skipped; pixels that no window covered are NaN.
        autocast_dtype: run the model under autocast in this dtype (e.g. `torch.bfloat16`); scores are float32.
        model_kwargs: passed to every call (e.g. `wavelengths`).
    """
    height, width = pixel_values.shape[-2:]
    grid = WindowGrid(height, width, window, stride, blend)

    def score_windows(windows: torch.Tensor) -> torch.Tensor:
        with torch.autocast(windows.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return model(pixel_values=windows, **model_kwargs).logits.float()

    def read_window(top: int, left: int, h: int, w: int) -> torch.Tensor | None:
        if valid_mask is not None and not valid_mask[:, top : top + h, left : left + w].any():
            return None
        return pixel_values[:, :, top : top + h, left : left + w]

    (_, scores, _), = stream_window_scores(score_windows, read_window, grid, batch_size, buffer_height=height)
    if scores is None:
        raise ValueError("No window holds a valid pixel: nothing to predict.")
    return scores


__all__ = [
    "BLENDS", "StripAccumulator", "WindowGrid", "check_window_settings", "column_blocks", "sliding_window_scores",
    "stream_window_scores", "window_starts",
]
