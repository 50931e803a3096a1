"""ResNet-50 on ImageNet with the Flax ImageNet example's recipe: 100 epochs, batch 1024, bfloat16.

    python -m recog.main --experiment=imagenet_resnet --workdir=workdirs/imagenet_resnet
    python -m recog.eval --workdir=workdirs/imagenet_resnet --once

Reproduces google/flax's examples/imagenet with its configs/tpu.py, whose README reports 76.37%
top-1 on the validation set after 125,100 steps in 4.4 hours on a TPU v3-8 (one host, 8 cores).
Designed for a TPU v3-8 or a bigger slice, or 8 GPUs; not run here (no accelerator and no ImageNet
on the development machine). On fewer devices, keep the batch and its learning rate and set
--config.grad_accum_steps so that a micro-batch fits.

Data: TFDS `imagenet2012` at its version 5 (ILSVRC 2012: 1,281,167 training images, 50,000
validation, 1,000 classes named by WordNet ID), through `tfds:imagenet2012:5.*.*`. TFDS cannot
download it: register at https://image-net.org/download-images, download ILSVRC2012_img_train.tar
and ILSVRC2012_img_val.tar into DATA_DIR/downloads/manual/ (DATA_DIR: --config.data.data_dir, else
$TFDS_DATA_DIR, else ~/tensorflow_datasets), and the first run prepares them there (hours, once).
A pod slice reads a prepared copy from a bucket: --config.data.data_dir=gs://BUCKET/tfds.

The recipe, as the example's train.py and input_pipeline.py have it: ResNet-50 v1.5 (stride in
the 3x3 convolution, each block's last BatchNorm scale starting at zero, BatchNorm momentum 0.9) in
bfloat16; SGD with Nesterov momentum 0.9 at learning rate 0.1 x batch / 256 = 0.4, warmed up
linearly from 0 over 5 epochs, then a cosine decay to 0 at 100 epochs (1,251 steps an epoch);
weight decay 1e-4 as an L2 penalty on the convolution and dense kernels only; plain cross-entropy
(no label smoothing), no EMA; inception crops (8-100% of the area, aspect 3/4 to 4/3) resized
bicubically to 224 px without antialiasing, and flips; eval on the central 224/256 of the image.
Where recog differs: He initialisation of the convolutions (the example keeps Flax's default,
LeCun normal); a crop that finds no box in 10 tries takes the whole image (the example: the central
crop); eval covers all 50,000 validation images (the example: 48 whole batches, 49,152).
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    if variant:
        raise ValueError("imagenet_resnet has no variants")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 1024
    # The learning rate follows --config.batch_size (an ml_collections reference).
    batch_size = config.get_ref("batch_size")
    config.eval_batch_size = 1024
    config.epochs = 100  # 125,113 steps at 1024 on ImageNet's 1,281,167 training images
    config.label_smoothing = 0.0
    config.eval_flip = False
    config.grad_accum_steps = 1
    config.ema_decay = 0.0
    config.sharding = "replicated"

    config.data = ml_collections.ConfigDict()
    config.data.name = "tfds:imagenet2012:5.*.*"
    config.data.data_dir = ml_collections.config_dict.placeholder(str)  # the TFDS data directory
    config.data.image_key = ml_collections.config_dict.placeholder(str)  # None: from the builder
    config.data.label_key = ml_collections.config_dict.placeholder(str)
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.train_pipeline = "inception_crop(224, method='bicubic', antialias=False)|flip_lr"
    config.data.eval_pipeline = "resize_small(256)|center_crop(224)"
    config.data.batch_pipeline = ""
    config.data.mean = (0.485, 0.456, 0.406)
    config.data.std = (0.229, 0.224, 0.225)
    config.data.cache = False  # the shuffle holds encoded images; decoded ones would not fit

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet50"
    config.model.width = 64
    config.model.dtype = "bfloat16"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.1 * batch_size.to_float() / 256
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 1e-4

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 5

    config.log_every = 100
    config.eval_every_epochs = 1
    config.keep_checkpoints = 3
    config.best_metric = "accuracy"
    return config
