"""The PyTorch reference for train_step.py: torchvision's ResNet v1.5, written out so that the
benchmark needs only `torch` (PyPI's torchvision does not import beside the CPU build of torch).

    pip install torch==2.13.0   # the CPU build; benchmark-only, recog does not need it
    python benchmarks/torch_resnet.py --model=resnet18 --image_size=128 --batch_size=64

Times the same train step as recog's: uint8 images normalised on the fly, cross-entropy with label
smoothing 0.1, SGD with Nesterov momentum and weight decay; channels-last memory format (oneDNN's
fast path on CPU, cuDNN's NHWC kernels on a GPU), bfloat16 through torch.autocast (AMP) when
--dtype=bfloat16; on --device=cuda, each timed step ends with torch.cuda.synchronize(). Prints
one JSON line.
Parameter counts equal recog's resnet18/34/50/101/152 (train_step.py checks this), so both sides
run the same architecture.
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_bn(in_channels, out_channels, 1, stride)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_channels, width, 3, stride), nn.ReLU(inplace=True), conv_bn(width, width, 3)
        )
        self.projection = shortcut(in_channels, width, stride)

    def forward(self, x):
        return torch.relu(self.body(x) + self.projection(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out_channels = width * self.expansion
        self.body = nn.Sequential(
            conv_bn(in_channels, width, 1),
            nn.ReLU(inplace=True),
            conv_bn(width, width, 3, stride),
            nn.ReLU(inplace=True),
            conv_bn(width, out_channels, 1),
        )
        self.projection = shortcut(in_channels, out_channels, stride)

    def forward(self, x):
        return torch.relu(self.body(x) + self.projection(x))


class ResNet(nn.Module):
    def __init__(self, block, blocks_per_stage, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn(in_channels, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        layers, channels = [], 64
        for stage, num_blocks in enumerate(blocks_per_stage):
            width = 64 * 2**stage
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(block(channels, width, stride))
                channels = width * block.expansion
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


ARCHITECTURES = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def resnet(name: str, num_classes: int) -> ResNet:
    block, blocks_per_stage = ARCHITECTURES[name]
    return ResNet(block, blocks_per_stage, num_classes)


def images_per_sec(
    model_name: str, image_size: int, batch_size: int, dtype: str, steps: int, device: str
):
    torch.manual_seed(0)
    model = resnet(model_name, 1000).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
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
    parser.add_argument("--model", default="resnet18", choices=sorted(ARCHITECTURES))
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    figures = images_per_sec(
        args.model, args.image_size, args.batch_size, args.dtype, args.steps, args.device
    )
    figures.update(torch=torch.__version__, threads=torch.get_num_threads(), device=args.device)
    if args.device == "cuda":
        figures["device_name"] = torch.cuda.get_device_name()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
