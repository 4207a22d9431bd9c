"""The candidate operations of a cell edge and the residual block between stages.

A convolution is ReLU → Conv → BN. In the search supernet every BN has no affine
parameters and no running statistics (``affine=False``): the operations' outputs
stay comparable while α decides among them, the convolution carries the bias the
BN would have, and evaluating the argmax architecture normalises with its own batch
statistics rather than with running averages gathered over other sampled
architectures. A network retrained from a genotype uses ordinary BN (``affine=True``).
"""

from __future__ import annotations

from torch import Tensor, nn

from .genotype import OPERATIONS


class ReLUConvBN(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2,
                      bias=not affine),
            nn.BatchNorm2d(out_channels, affine=affine, track_running_stats=affine),
        )


class Zero(nn.Module):
    """The ``none`` operation: the edge contributes nothing."""

    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(()).expand_as(x)


def make_operation(name: str, channels: int, affine: bool) -> nn.Module:
    """The operation ``name`` of :data:`OPERATIONS` on ``channels`` channels, stride 1."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, affine=affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, affine=affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown operation {name!r}; valid operations: {', '.join(OPERATIONS)}.")


class ResidualBlock(nn.Module):
    """The ResNet basic block that halves the resolution and doubles the channels between stages."""

    def __init__(self, in_channels: int, out_channels: int, affine: bool = True) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(in_channels, out_channels, 3, stride=2, affine=affine)
        self.conv_b = ReLUConvBN(out_channels, out_channels, 3, affine=affine)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2),
                                      nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))
