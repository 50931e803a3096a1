"""Multi-host start-up, the device mesh, shardings, and turning host batches into global arrays."""

import socket
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recog.errors import UserError

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_seconds: int = 300,
) -> None:
    """Joins the processes of a multi-host run with `jax.distributed.initialize`.

    Explicit flags win. Without them JAX's own cluster detection decides: Cloud TPU VMs and pod
    slices (through the GCE metadata server), GKE TPU pods, multislice, SLURM, Open MPI; where it
    finds none, this process runs alone and nothing is initialised. A process that cannot reach
    the coordinator it was given fails after `timeout_seconds` with a message saying what to
    check.
    """
    if coordinator_address is None and num_processes is None and process_id is None:
        try:
            jax.distributed.initialize(initialization_timeout=timeout_seconds)
        except ValueError as e:
            # What jax.distributed.initialize raises when no cluster was detected.
            if "coordinator_address should be defined" not in str(e):
                raise
        return
    if process_id:
        wait_for_coordinator(coordinator_address, process_id, timeout_seconds)
    # JAX aborts the process (it does not raise) when joining fails after the timeout.
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_seconds,
    )


def wait_for_coordinator(address: str | None, process_id: int, timeout_seconds: float) -> None:
    """Waits until process 0's coordinator accepts connections, or fails with what to check."""
    if not address or ":" not in address:
        raise UserError(f"--coordinator_address must be HOST:PORT, got {address!r}.")
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise UserError(
                    f"process {process_id} could not reach the coordinator at {address} within "
                    f"{timeout_seconds:g} s ({e.strerror or e}); check that process 0 is running "
                    "with the same --coordinator_address and that the port is reachable."
                ) from None
            time.sleep(0.5)


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
