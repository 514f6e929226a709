"""Models. Inputs are pixels in [0, 1]; normalisation ``(x - mean) / std`` happens inside ``forward``.

* ``resnet18``: the official code's CIFAR ResNet-18 (Zhu et al. 2023 / Pang et al. 2021 repos,
  utils/model.py): 3x3 stride-1 stem without bias, BatchNorm, ReLU, **and the 3x3 stride-2 max-pool kept**,
  BasicBlocks [2, 2, 2, 2], adaptive average pool, linear head. ``width`` = base channels (64 in the paper;
  16/32 give the same architecture cheaper). Kaiming-normal (fan_out) conv init, BN weight 1 / bias 0.
* ``small_cnn``: the CPU-scale model of DESIGN.md section 8: conv 32/64/128 (3x3, ReLU) each followed by a
  2x2 max-pool, then one linear layer (2048 -> the dataset's classes at 32x32); no BatchNorm. 113,738 parameters at width 32
  on CIFAR-10.

Only trainable parameters are federated; BatchNorm running statistics stay those of the start checkpoint
(a deliberate difference from the official harness, whose crafting forwards in train mode shift them).
"""

from __future__ import annotations

import torch
from torch import nn


class _Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.channels_last = False

    def forward(self, x):
        x = (x - self.mean) / self.std
        # channels_last activations roughly halve CPU conv time when the weights are channels_last too
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, in_ch: int, size: int, width: int, mean=(0.5,), std=(0.5,)):
        super().__init__()
        self.norm = _Normalize(mean, std)
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        s = size // 8
        self.fc = nn.Linear(4 * w * s * s, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(self.norm(x)), 1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or in_planes != planes:
            self.down = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int, in_ch: int, width: int, mean=(0.5,), std=(0.5,)):
        super().__init__()
        self.norm = _Normalize(mean, std)
        w = width
        self.conv1 = nn.Conv2d(in_ch, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)  # kept, as in the official code
        layers, in_planes = [], w
        for i, (planes, stride) in enumerate([(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)]):
            blocks = [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.norm(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_model(model_cfg, dataset_cfg) -> nn.Module:
    """Build the configured model (seeded by the caller)."""
    c, h, _ = list(dataset_cfg["shape"])
    kw = dict(num_classes=int(dataset_cfg["num_classes"]), in_ch=int(c),
              mean=tuple(dataset_cfg["mean"]), std=tuple(dataset_cfg["std"]))
    name = model_cfg["name"]
    if name == "small_cnn":
        model = SmallCNN(size=int(h), width=int(model_cfg.width), **kw)
    elif name == "resnet18":
        model = ResNet18(width=int(model_cfg.width), **kw)
    else:
        raise ValueError(f"unknown model {name!r}")
    if model_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.norm.channels_last = True
    return model


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def get_params(model: nn.Module) -> list:
    """Trainable parameters as float32 numpy arrays (contiguous NCHW layout), in named_parameters order."""
    return [p.detach().cpu().contiguous().numpy().copy() for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def set_params(model: nn.Module, arrays) -> None:
    """Copy arrays into the parameters *in place* (keeps channels_last; vector_to_parameters would not)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if len(params) != len(arrays):
        raise ValueError(f"expected {len(params)} arrays, got {len(arrays)}")
    for p, a in zip(params, arrays):
        p.copy_(torch.as_tensor(a).view_as(p))
