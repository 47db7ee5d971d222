"""Resizing learned absolute position tables to another patch grid, shared by every encoder family and EVA02."""

import torch
import torch.nn.functional as F


def resize_position_grid(grid_table: torch.Tensor, size: tuple[int, int], mode: str,
                         antialias: bool = False) -> torch.Tensor:
    """A (1, H, W, D) position grid resized to (1, h, w, D): `mode` `"bicubic"` or `"bilinear"`, `align_corners=False`,
    computed in float32 (the converters' and the libraries' resize; timm's with `antialias=True`). The grid itself
    when its size is already (h, w)."""
    if tuple(grid_table.shape[1:3]) == tuple(size):
        return grid_table
    resized = F.interpolate(grid_table.permute(0, 3, 1, 2).float(), size=tuple(size), mode=mode, align_corners=False,
                            antialias=antialias)
    return resized.to(grid_table.dtype).permute(0, 2, 3, 1)


def resize_cls_position_table(table: torch.Tensor, grid: tuple[int, int], mode: str,
                              antialias: bool = False) -> torch.Tensor:
    """A (1, 1 + M*M, D) position table (cls entry first, kept) with its patch part resized to a (h, w) grid by
    `resize_position_grid`; the table itself when `grid == (M, M)`."""
    side = round((table.shape[1] - 1) ** 0.5)
    if tuple(grid) == (side, side):
        return table
    patches = resize_position_grid(table[:, 1:].reshape(1, side, side, -1), grid, mode, antialias)
    return torch.cat([table[:, :1], patches.reshape(1, -1, table.shape[-1])], dim=1)
