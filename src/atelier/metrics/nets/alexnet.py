"""AlexNet convolutional trunk in torchvision's layout, returning the five ReLU taps LPIPS uses (Krizhevsky 2014 "one weird trick").

Taps (channels): relu1 64, relu2 192, relu3 384, relu4 256, relu5 256 - as in the lpips package's `alexnet` slices.
Loads `alexnet-owt-7be5be79.pth` (torchvision) by its own names `features.<index>.weight|bias`.
"""

from __future__ import annotations

from torch import nn

from atelier.metrics.nets import TappedFeatures, build_trunk

TAP_CHANNELS = (64, 192, 384, 256, 256)


class AlexNetFeatures(TappedFeatures):
    """torchvision AlexNet `features` (indices kept so state-dict keys match) with LPIPS's five ReLU outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 0
            nn.ReLU(inplace=False),  # 1 -> tap relu1
            nn.MaxPool2d(kernel_size=3, stride=2),  # 2
            nn.Conv2d(64, 192, kernel_size=5, padding=2),  # 3
            nn.ReLU(inplace=False),  # 4 -> tap relu2
            nn.MaxPool2d(kernel_size=3, stride=2),  # 5
            nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 6
            nn.ReLU(inplace=False),  # 7 -> tap relu3
            nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 8
            nn.ReLU(inplace=False),  # 9 -> tap relu4
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 10
            nn.ReLU(inplace=False),  # 11 -> tap relu5
        )
        self.tap_indices = (1, 4, 7, 9, 11)


def alexnet_features(state_dict: dict | None = None, source: str = "state dict") -> AlexNetFeatures:
    """Build the AlexNet trunk and load torchvision weights into it (the classifier head is ignored)."""
    return build_trunk(AlexNetFeatures(), state_dict, source)
