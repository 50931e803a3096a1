"""The PyTorch reference for train_step.py: torchvision's ResNet v1.5 with torchvision's module
names, written out so that the benchmark needs only `torch` (PyPI's torchvision does not import
beside the CPU build of torch); EfficientNet-Lite0 to Lite4 from PyPI's efficientnet-lite-pytorch
(lukemelas' EfficientNet-PyTorch, TensorFlow's SAME padding), whose layout recog's ImageNet
weights come in.

    pip install torch==2.13.0   # the CPU build; benchmark-only, recog does not need it
    python benchmarks/torch_resnet.py --model=resnet18 --image_size=128 --batch_size=64
    python benchmarks/torch_resnet.py --model=efficientnet_lite0 --image_size=224 --batch_size=32

Times the same train step as recog's: uint8 images normalised on the fly, cross-entropy with label
smoothing 0.1, SGD with Nesterov momentum and weight decay; channels-last memory format (oneDNN's
fast path on CPU, cuDNN's NHWC kernels on a GPU), bfloat16 through torch.autocast (AMP) when
--dtype=bfloat16; on --device=cuda, each timed step ends with torch.cuda.synchronize().
--frozen_backbone trains the classifier alone, every BatchNorm layer in eval mode (the backward
pass stops at the classifier). Prints one JSON line.
Parameter counts equal recog's resnet18/34/50/101/152 (train_step.py checks this), so both sides
run the same architecture.
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)


def downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        self.conv1 = conv(in_channels, width, 3, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv(width, width, 3)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample(in_channels, width, stride)

    def forward(self, x):
        y = self.bn1(self.conv1(x)).relu_()  # in place, as torchvision's nn.ReLU(inplace=True)
        y = self.bn2(self.conv2(y))
        return (y + (x if self.downsample is None else self.downsample(x))).relu_()


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = conv(in_channels, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv(width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv(width, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = downsample(in_channels, out_channels, stride)

    def forward(self, x):
        y = self.bn1(self.conv1(x)).relu_()
        y = self.bn2(self.conv2(y)).relu_()
        y = self.bn3(self.conv3(y))
        return (y + (x if self.downsample is None else self.downsample(x))).relu_()


class ResNet(nn.Module):
    """torchvision's module names (conv1, bn1, layer1-4, downsample.0/1, fc), so that its
    state dict has torchvision's keys (tests/test_finetune.py loads it into recog)."""

    def __init__(self, block, blocks_per_stage, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.conv1 = conv(in_channels, 64, 7, 2)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 64
        for stage, num_blocks in enumerate(blocks_per_stage):
            width = 64 * 2**stage
            blocks = []
            for index in range(num_blocks):
                blocks.append(block(channels, width, 2 if stage > 0 and index == 0 else 1))
                channels = width * block.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.maxpool(self.bn1(self.conv1(x)).relu_())
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


ARCHITECTURES = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


EFFICIENTNET_LITES = tuple(f"efficientnet_lite{i}" for i in range(5))


def resnet(name: str, num_classes: int) -> ResNet:
    block, blocks_per_stage = ARCHITECTURES[name]
    return ResNet(block, blocks_per_stage, num_classes)


def model_of(name: str, num_classes: int) -> tuple[nn.Module, str]:
    """The model and its classifier's module name."""
    if name in EFFICIENTNET_LITES:
        from efficientnet_lite_pytorch import EfficientNet

        lite = EfficientNet.from_name(name.replace("_", "-"), num_classes=num_classes)
        return lite, "_fc"
    return resnet(name, num_classes), "fc"


def images_per_sec(
    model_name: str,
    image_size: int,
    batch_size: int,
    dtype: str,
    steps: int,
    device: str,
    frozen_backbone: bool = False,
):
    torch.manual_seed(0)
    model, classifier = model_of(model_name, 1000)
    model = model.to(device, memory_format=torch.channels_last).train()
    if frozen_backbone:
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith(f"{classifier}.")
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
    )
    shape = (batch_size, 3, image_size, image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch_size,), device=device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            x = ((images.float() - mean) / std).contiguous(memory_format=torch.channels_last)
            loss = nn.functional.cross_entropy(model(x), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):  # the median, as train_step.py times recog's step
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    return {"images_per_sec": batch_size / statistics.median(times), "params": params}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="resnet18", choices=sorted((*ARCHITECTURES, *EFFICIENTNET_LITES))
    )
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--frozen_backbone", action="store_true")
    args = parser.parse_args()
    figures = images_per_sec(
        args.model,
        args.image_size,
        args.batch_size,
        args.dtype,
        args.steps,
        args.device,
        args.frozen_backbone,
    )
    figures.update(torch=torch.__version__, threads=torch.get_num_threads(), device=args.device)
    if args.device == "cuda":
        figures["device_name"] = torch.cuda.get_device_name()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
