"""Cats vs dogs, fine-tuned from torchvision's ImageNet ResNet-50 weights; `:cpu` for a laptop.

    curl -LO https://download.pytorch.org/models/resnet50-11ad3fa6.pth
    W=--config.init_from=resnet50-11ad3fa6.pth
    python -m recog.main --experiment=cats_finetune $W --workdir=workdirs/cats_finetune
    python -m recog.main --experiment=cats_finetune:cpu $W --config.data.dir=PATH --workdir=DIR
    python -m recog.eval --workdir=DIR --once

Weights: torchvision's ResNet50_Weights.IMAGENET1K_V2 (its default ResNet-50 weights), 97.8 MB,
from https://download.pytorch.org/models/resnet50-11ad3fa6.pth; any ResNet-50 state dict in
torchvision's or timm's layout, as .pth or .safetensors, works the same.
The file is not part of recog: without --config.init_from the run stops and says what to pass.
The 1000-class ImageNet classifier is replaced by a new one for the data's classes; every other
tensor, BatchNorm statistics included, comes from the file.

Data: as cats_resnet: TFDS `cats_vs_dogs` (train = train[:80%], 18,610 photos; validation =
train[80%:90%]), or with --config.data.dir=PATH a folder with one subfolder per class, or with
train/ and validation/ folders of those.

Default (GPUs, TPUs): 3 epochs of the TFDS data at 224 px in bfloat16, batch 64, inception crops
and flips, label smoothing 0.1, SGD with Nesterov momentum at 0.01 per 64 images on a cosine
schedule, the new classifier at 10 times that; the stem and the first stage (blocks 0-2) frozen,
with their BatchNorm statistics.

Variant `cpu`: the 2,000-photo setup (a folder of 1,000 cats and 1,000 dogs, 1,000 validation
photos), 160 px, float32, batch 32 (learning rate 0.005), 3 epochs, evaluated after each without
the mirror images; everything but the last stage (blocks 13-15) and the classifier frozen, so
that the backward pass covers only them (XLA's count for a step: 6.95 GFLOPs per 8 images at
64 px, against 15.12 with nothing frozen). Its time, measured with random weights of the same
shapes on ../shared/data/cats_dogs: 29 minutes in all on one core of the 2-core development
machine, shared with other jobs (3.3 to 5.5 s per step; 2.5 minutes for each of 4 evaluations,
one more than the recipe now makes).

Accuracy NOT measured here (no network to download the weights on the development machine). The
published expectation for this setup: about 97% test accuracy (96.8%) from an ImageNet-trained
VGG16 fine-tuned on 2,000 photos of the same Kaggle cats and dogs, with 1,000 validation and
1,000 test photos (Chollet, "Deep Learning with Python", 1st edition, section 5.3). From
scratch, cats_resnet:cpu measured 86% on such a 2,000-photo folder.
"""

import ml_collections
from recog_experiments import cats_resnet

TRAIN_PHOTOS = 18_610


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.init_from = ml_collections.config_dict.placeholder(str)  # None: required
    config.freeze = r"stem_.*|blocks/[0-2]/.*"  # the stem and the first stage
    config.lr_factors = ((r"head/.*", 10.0),)  # the new classifier learns faster
    config.batch_size = 64
    # Derived from the batch size, so that they follow --config.batch_size (ml_collections
    # references); each can still be set on its own.
    batch_size = config.get_ref("batch_size")
    config.eval_batch_size = 256
    config.num_steps = 3 * TRAIN_PHOTOS // batch_size
    config.label_smoothing = 0.1
    config.eval_flip = True
    config.eval_rotations = 1
    config.eval_tilt_degrees = 0.0
    config.orientation_weight = 0.0
    config.grad_accum_steps = 1
    config.ema_decay = 0.0
    config.sharding = "replicated"

    config.data = cats_resnet.get_config().data  # TFDS cats_vs_dogs or a folder, as cats_resnet
    config.data.train_pipeline = "inception_crop(224)|flip_lr"
    config.data.batch_pipeline = ""

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet50"  # width 64: torchvision's
    config.model.dtype = "bfloat16"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.01 * batch_size.to_float() / 64
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-5

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 50

    config.log_every = 20
    config.eval_every = 250
    config.checkpoint_every = config.get_ref("eval_every")
    config.keep_checkpoints = 2
    config.best_metric = "accuracy"

    if variant == "cpu":
        apply_cpu_variant(config)
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; variants: cpu")
    return config


def apply_cpu_variant(config: ml_collections.ConfigDict) -> None:
    train_photos = 2_000
    config.freeze = r"stem_.*|blocks/([0-9]|1[0-2])/.*"  # all but the last stage
    config.batch_size = 32
    batch_size = config.get_ref("batch_size")
    config.eval_batch_size = 200
    config.num_steps = 3 * (train_photos // batch_size)  # ends on an eval
    config.data.train_pipeline = "inception_crop(160, area_min=0.25)|flip_lr"
    config.data.eval_pipeline = "resize_small(183)|center_crop(160)"
    config.eval_flip = False  # a forward pass is most of what a step costs on a CPU
    config.data.cache = True  # 2,000 decoded photos take about 1 GB
    config.model.dtype = "float32"  # bfloat16 is no faster on a CPU
    config.schedule.warmup_steps = 10
    config.log_every = 10
    config.eval_every = train_photos // batch_size
