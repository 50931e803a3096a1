"""Figures that describe a registered model without building its weights: parameter count and
forward-pass GFLOPs.

Both work on an abstract model (`nnx.eval_shape`: shapes and dtypes, no arrays). GFLOPs come from
XLA's cost analysis of the lowered (not compiled) inference forward pass of one image, in which a
multiply-add counts as 2 flops; taps that fall on zero padding are not counted, so ResNet-50's
published 4.1 GMACs show as 7.95 GFLOPs rather than 8.2.

`--list` shows them for every model (listing_figures), and measuring them all takes about 20 s on
2 cores. The figures of the models that ship with recog (recog/models/ and the repository's
plugins/ folder) are measured once for each version of those folders' source and of JAX and Flax,
and kept in a cache file (cache_path); any other plugin's models are measured afresh on every
listing, so that their figures never go stale.
"""

import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import logging
from flax import nnx

from recog import plugins, startup
from recog.registry import MODELS

MEASURED_WITH = ("jax", "jaxlib", "flax")  # their versions are part of the cache key


def abstract_model(
    name: str, num_classes: int = 1000, in_channels: int = 3, **config
) -> nnx.Module:
    """The registered model `name` built with `config` (its defaults for the rest), as shapes only.

    Cached: callers must not change it in place (`.train()`, `.eval()`); split and merge instead.
    """
    return _abstract_model(name, num_classes, in_channels, tuple(sorted(config.items())))


@functools.cache
def _abstract_model(name: str, num_classes: int, in_channels: int, config: tuple) -> nnx.Module:
    factory = MODELS.get(name)

    def build(key: jax.Array) -> nnx.Module:
        # Only the key is traced. Every draw from an nnx.Rngs stream updates its counter, and
        # with a traced counter flax and jax 0.10 inspect the whole trace on each update, which
        # made this quadratic in depth (5 s for ResNet-200); a concrete counter keeps it linear.
        with jax.ensure_compile_time_eval():
            return factory(num_classes, in_channels=in_channels, rngs=nnx.Rngs(key), **dict(config))

    return nnx.eval_shape(build, jax.random.key(0))


def param_count(name: str, num_classes: int = 1000, in_channels: int = 3) -> int:
    """Number of trainable parameters (nnx.Param; BatchNorm statistics are not parameters)."""
    params = nnx.state(abstract_model(name, num_classes, in_channels), nnx.Param)
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def gflops(
    name: str, image_size: int = 224, num_classes: int = 1000, in_channels: int = 3
) -> float:
    """Flops of one image's forward pass in eval mode, in units of 1e9 (multiply-add = 2)."""
    graphdef, state = nnx.split(abstract_model(name, num_classes, in_channels))
    image = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)

    def forward(state: nnx.State, images: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state)
        model.eval()
        return model(images)

    return jax.jit(forward).lower(state, image).cost_analysis()["flops"] / 1e9


def measure(name: str) -> tuple[int | None, float | None]:
    """(parameters, GFLOPs at 224 px); None where the model cannot be measured so."""
    try:
        params = param_count(name)
    except Exception:  # a plugin's model may need config keys its factory has no default for
        return None, None
    try:
        return params, gflops(name)
    except Exception:  # or may not take 224x224x3 images (a model for 8x8 digits, say)
        return params, None


def cache_path() -> Path:
    return startup.cache_root() / "model_figures.json"


@functools.cache
def shipped_folders() -> tuple[Path, ...]:
    """The folders of the models that ship with recog: recog/models/ and the plugins/ folder."""
    repo_plugins = plugins.package_folder(plugins.REPO_PLUGINS_PACKAGE)
    return Path(__file__).resolve().parent, repo_plugins.resolve()


@functools.cache
def shipped_source_key() -> str:
    """A digest of the shipped models' source and of the versions of the libraries that measure
    them: the figures in the cache file hold while it is unchanged."""
    digest = hashlib.sha256()
    for package in MEASURED_WITH:
        digest.update(f"{package}=={importlib.metadata.version(package)}\n".encode())
    for folder in shipped_folders():
        for path in sorted(folder.rglob("*.py")):
            digest.update(f"{path.relative_to(folder)}\n".encode() + path.read_bytes())
    return digest.hexdigest()


def is_shipped(name: str) -> bool:
    try:
        source = Path(inspect.getsourcefile(MODELS.get(name))).resolve()
    except TypeError:  # defined where there is no source file
        return False
    return any(source.is_relative_to(folder) for folder in shipped_folders())


@functools.cache
def cached_figures() -> dict[str, list]:
    """The cache file's figures when they were measured on today's source, else none."""
    try:
        cache = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return cache["figures"] if cache.get("source") == shipped_source_key() else {}


def save_figures(figures: dict[str, list]) -> None:
    """Writes the cache file whole (another process never reads half of it); a cache that
    cannot be written is only slower."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as f:
            json.dump({"source": shipped_source_key(), "figures": figures}, f)
        os.replace(f.name, path)
    except OSError as e:
        logging.warning("Could not cache the model figures in %s: %s", path, e)


def figures(name: str) -> tuple[int | None, float | None]:
    """measure(name), from the cache file for the models that ship with recog."""
    if not is_shipped(name):
        return measure(name)
    cached = cached_figures()
    if name not in cached:
        if not cached:
            logging.info(
                "Measuring the models' parameters and GFLOPs once for this version of recog "
                "(about 20 s); they are then kept in %s.",
                cache_path(),
            )
        cached[name] = list(measure(name))
        save_figures(cached)
    return tuple(cached[name])


def listing_figures(name: str) -> tuple[str, str]:
    """(params in millions, GFLOPs at 224 px) as `--list` prints them; "-" where one fails."""
    params, flops = figures(name)
    return (
        "-" if params is None else f"{params / 1e6:.2f}M",
        "-" if flops is None else f"{flops:.2f}",
    )
