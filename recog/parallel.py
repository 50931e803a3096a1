"""The device mesh, shardings, and turning host batches into global arrays."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recog.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process).

    Auto axis types keep classic jit sharding propagation: the model code needs no sharding
    annotations, and reductions over the batch (BatchNorm, the loss) are global.
    """
    devices = devices or jax.devices()
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(name: str, global_batch_size: int, mesh: Mesh) -> None:
    devices = mesh.size
    if global_batch_size % devices:
        raise UserError(
            f"{name}={global_batch_size} does not divide over the {devices} devices "
            f"({jax.process_count()} process(es)); use a multiple of {devices}, "
            f"e.g. {max(devices, global_batch_size // devices * devices)}."
        )


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This host's part of a batch -> global arrays sharded over the data axis of all hosts."""
    return {
        key: jax.make_array_from_process_local_data(sharding, value) for key, value in batch.items()
    }
