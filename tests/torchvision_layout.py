"""torchvision's MobileNetV2, EfficientNet-B0 and ConvNeXt in plain torch, with torchvision's
module names and forward passes, so that their state dicts have torchvision's keys (PyPI's
torchvision does not import beside the CPU build of torch). The ResNets are in
benchmarks/torch_resnet.py."""

import torch
from torch import nn
from torch.nn import functional


class ConvNormActivation(nn.Sequential):
    """torchvision.ops.Conv2dNormActivation: 0 conv, 1 BatchNorm, 2 activation."""

    def __init__(self, cin, cout, kernel_size, stride=1, groups=1, activation=nn.ReLU6):
        padding = (kernel_size - 1) // 2
        layers = [
            nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        super().__init__(*layers, *([activation()] if activation else []))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand_ratio):
        super().__init__()
        hidden = cin * expand_ratio
        layers = [ConvNormActivation(cin, hidden, 1)] if expand_ratio != 1 else []
        layers += [
            ConvNormActivation(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2))
    SETTINGS += ((6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes):
        super().__init__()
        features, cin = [ConvNormActivation(3, 32, 3, 2)], 32
        for expand_ratio, cout, repeats, stride in self.SETTINGS:
            for index in range(repeats):
                features.append(
                    InvertedResidual(cin, cout, stride if index == 0 else 1, expand_ratio)
                )
                cin = cout
        features.append(ConvNormActivation(cin, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation, with efficientnet's SiLU."""

    def __init__(self, channels, squeezed):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        scale = self.fc2(functional.silu(self.fc1(self.avgpool(x))))
        return x * torch.sigmoid(scale)


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand_ratio, kernel_size, stride):
        super().__init__()
        hidden = cin * expand_ratio
        layers = [ConvNormActivation(cin, hidden, 1, activation=nn.SiLU)] if hidden != cin else []
        layers += [
            ConvNormActivation(hidden, hidden, kernel_size, stride, hidden, activation=nn.SiLU),
            SqueezeExcitation(hidden, max(1, cin // 4)),
            ConvNormActivation(hidden, cout, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):  # stochastic depth is the identity in eval mode
        return x + self.block(x) if self.use_res_connect else self.block(x)


class EfficientNetB0(nn.Module):
    # (expand ratio, kernel, stride, input channels, output channels, blocks)
    STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2))
    STAGES += ((6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4))
    STAGES += ((6, 3, 1, 192, 320, 1),)

    def __init__(self, num_classes):
        super().__init__()
        features = [ConvNormActivation(3, 32, 3, 2, activation=nn.SiLU)]
        for expand_ratio, kernel_size, stride, cin, cout, repeats in self.STAGES:
            blocks = [MBConv(cin, cout, expand_ratio, kernel_size, stride)]
            blocks += [MBConv(cout, cout, expand_ratio, kernel_size, 1) for _ in range(repeats - 1)]
            features.append(nn.Sequential(*blocks))
        features.append(ConvNormActivation(320, 1280, 1, activation=nn.SiLU))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of NCHW."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-6))

    def forward(self, x):  # stochastic depth is the identity in eval mode
        return x + self.layer_scale * self.block(x)


class ConvNeXt(nn.Module):
    def __init__(self, blocks_per_stage, widths, num_classes):
        super().__init__()
        features = [nn.Sequential(nn.Conv2d(3, widths[0], 4, 4), LayerNorm2d(widths[0], eps=1e-6))]
        for stage, (depth, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
            features.append(nn.Sequential(*(CNBlock(width) for _ in range(depth))))
            if stage + 1 < len(widths):
                down = nn.Conv2d(width, widths[stage + 1], 2, 2)
                features.append(nn.Sequential(LayerNorm2d(width, eps=1e-6), down))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            LayerNorm2d(widths[-1], eps=1e-6), nn.Flatten(1), nn.Linear(widths[-1], num_classes)
        )

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def convnext_tiny(num_classes):
    return ConvNeXt((3, 3, 9, 3), (96, 192, 384, 768), num_classes)
