"""WRN-28-10 on CIFAR-10 with the Wide ResNet paper's recipe: 200 epochs of batch 128, dropout 0.3.

    python -m recog.main --experiment=cifar10_resnet --workdir=workdirs/cifar10_resnet
    python -m recog.eval --workdir=workdirs/cifar10_resnet --once

Reproduces Zagoruyko & Komodakis 2016, "Wide Residual Networks" (BMVC; arXiv:1605.07146): with
mean/std normalisation, flips and translations, WRN-28-10 with dropout 0.3 has 3.89% test error
on CIFAR-10 (96.11% accuracy), the median of 5 runs (4.00% without dropout), as the paper and the
README of its code (github.com/szagoruyko/wide-residual-networks) report; that README gives about
a day on one Titan X for WRN-28-10 with dropout (on CIFAR-100, of the same size). Designed for one
GPU (36.5M parameters, 9.5 GFLOPs an image, in bfloat16); not run here (no accelerator, and no
network for the download, on the development machine).

Data: TFDS `cifar10` (50,000 train and 10,000 test images of 32x32, 10 classes), through
`tfds:cifar10`, downloaded (162 MiB) and prepared on first use. Evaluated on `test`, as the paper.

The recipe, as that code's scripts/train_cifar.sh and train.lua have it: batch 128, SGD with
Nesterov momentum 0.9 at learning rate 0.1, weight decay 5e-4, 200 epochs, random crops of the
image padded by 4 pixels, horizontal flips, per-channel normalisation by the training set's mean
and standard deviation (fb.resnet.torch's figures: the README's "meanstd" preprocessing is
fb.resnet.torch's). Where recog differs: a cosine decay to 0 instead of the paper's steps (x0.2 at
epochs 60, 120 and 160), zero padding where the paper reflects, weight decay on kernels only (the
paper's Torch SGD also decays biases and BatchNorm scales), bfloat16 compute.
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    if variant:
        raise ValueError("cifar10_resnet has no variants")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.epochs = 200  # 78,125 steps at batch 128 on CIFAR-10's 50,000 training images
    config.label_smoothing = 0.0
    config.eval_flip = False
    config.grad_accum_steps = 1
    config.ema_decay = 0.0
    config.sharding = "replicated"

    config.data = ml_collections.ConfigDict()
    config.data.name = "tfds:cifar10"
    config.data.data_dir = ml_collections.config_dict.placeholder(str)  # the TFDS data directory
    config.data.image_key = ml_collections.config_dict.placeholder(str)  # None: from the builder
    config.data.label_key = ml_collections.config_dict.placeholder(str)
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.train_pipeline = "pad_crop(4)|flip_lr"
    config.data.eval_pipeline = ""
    config.data.batch_pipeline = ""
    config.data.mean = tuple(v / 255 for v in (125.3, 123.0, 113.9))
    config.data.std = tuple(v / 255 for v in (63.0, 62.1, 66.7))
    config.data.cache = True  # 50,000 decoded 32x32 images: 154 MB

    config.model = ml_collections.ConfigDict()
    config.model.name = "wrn28_10"
    config.model.dropout_rate = 0.3
    config.model.dtype = "bfloat16"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 0

    config.log_every = 100
    config.eval_every_epochs = 5
    config.keep_checkpoints = 3
    config.best_metric = "accuracy"
    return config
