"""VGG16 convolutional trunk in torchvision's layout, returning the five ReLU taps LPIPS-vgg uses (Simonyan & Zisserman 2015).

Taps (channels): relu1_2 64, relu2_2 128, relu3_3 256, relu4_3 512, relu5_3 512.
Loads `vgg16-397923af.pth` (torchvision) by its own names `features.<index>.weight|bias`.
"""

from __future__ import annotations

from torch import nn

from atelier.metrics.nets import TappedFeatures, build_trunk

TAP_CHANNELS = (64, 128, 256, 512, 512)
# torchvision's configuration "D": numbers are conv widths, "M" a 2x2 max pool.
_CONFIG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG16Features(TappedFeatures):
    """torchvision VGG16 `features` up to relu5_3 (the last pool is never used by LPIPS)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _CONFIG_D:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.tap_indices = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


def vgg16_features(state_dict: dict | None = None, source: str = "state dict") -> VGG16Features:
    """Build the VGG16 trunk and load torchvision weights into it (the classifier head is ignored)."""
    return build_trunk(VGG16Features(), state_dict, source)
