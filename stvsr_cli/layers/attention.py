"""Non-local attention over windows of a feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import is_channels_last


class NonLocalBlock(nn.Module):
    """Non-local residual block with dot-product similarity (MEGAN sec. 3.1, eqs. 1-3).

        z_i = W_z softmax_j(u(x_i) . v(x_j)) g(x_j) + x_i

    u, v, g and W_z are 1x1 convolutions; u, v and g halve the channels, as
    in Wang et al.'s non-local networks. The similarity is the plain dot
    product of eq. 2, without the 1/sqrt(d) of transformer attention.

    Choice the paper leaves open: attention over every position is quadratic
    in image area, fine on a 32x32 training crop and impossible on a 1080p
    frame. The positions j are therefore those of a `window` x `window` tile
    of the feature map around i (the whole map when it is smaller, which is
    exactly the paper's block on a training crop), so the cost grows linearly
    with area and inference sees what training saw. A map that does not divide
    into windows is zero-padded and the padding is masked out of the softmax.

    W_z starts at zero, so the block starts as the identity.
    """

    def __init__(self, channels: int, window: int) -> None:
        super().__init__()
        inner = channels // 2
        self.window = window
        self.u = nn.Conv2d(channels, inner, 1)
        self.v = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.w_z = nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.w_z.weight)
        nn.init.zeros_(self.w_z.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        wh, ww = min(self.window, h), min(self.window, w)
        pad_h, pad_w = -h % wh, -w % ww
        padded = F.pad(x, (0, pad_w, 0, pad_h))

        # (N, C', Hp, Wp) -> (N, windows, wh * ww, C')
        query, key, value = (self._windows(proj(padded), wh, ww) for proj in (self.u, self.v, self.g))
        key_mask = None
        if pad_h or pad_w:
            valid = torch.zeros(1, 1, h + pad_h, w + pad_w, dtype=torch.bool, device=x.device)
            valid[..., :h, :w] = True
            key_mask = self._windows(valid, wh, ww).transpose(-1, -2)  # (1, windows, 1, wh * ww)
        y = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, scale=1.0)  # eqs. 1-2
        y = self._merge(y, n, h + pad_h, w + pad_w, wh, ww, is_channels_last(x))[..., :h, :w]
        return self.w_z(y) + x  # eq. 3

    @staticmethod
    def _windows(t: Tensor, wh: int, ww: int) -> Tensor:
        n, c, h, w = t.shape
        t = t.view(n, c, h // wh, wh, w // ww, ww).permute(0, 2, 4, 3, 5, 1)
        return t.reshape(n, (h // wh) * (w // ww), wh * ww, c)

    @staticmethod
    def _merge(t: Tensor, n: int, h: int, w: int, wh: int, ww: int, channels_last: bool) -> Tensor:
        """(N, windows, wh * ww, C') -> (N, C', H, W), in one copy to either layout."""
        c = t.shape[-1]
        t = t.view(n, h // wh, w // ww, wh, ww, c)
        if channels_last:
            return t.transpose(2, 3).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return t.permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)
