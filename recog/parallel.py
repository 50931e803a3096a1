"""Multi-host start-up, the device mesh, shardings, and turning host batches into global arrays."""

import os
import socket
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recog.errors import UserError

DATA_AXIS = "data"

# Environment variables that mean "this process is one of several", per cluster kind.
_MULTI_PROCESS_ENV = {
    "TPU pod slice": ("TPU_WORKER_HOSTNAMES", lambda v: "," in v),
    "SLURM": ("SLURM_NTASKS", lambda v: v.isdigit() and int(v) > 1),
    "Open MPI": ("OMPI_COMM_WORLD_SIZE", lambda v: v.isdigit() and int(v) > 1),
}


def detected_cluster() -> str | None:
    for cluster, (variable, is_multi) in _MULTI_PROCESS_ENV.items():
        if is_multi(os.environ.get(variable, "")):
            return cluster
    return None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_seconds: int = 300,
) -> None:
    """Joins the processes of a multi-host run with `jax.distributed.initialize`.

    Explicit flags win; otherwise a TPU pod slice, SLURM or MPI environment is detected and JAX
    reads the rest from it. A single process does nothing. A process that cannot reach the
    coordinator fails after `timeout_seconds` with a message saying what to check.
    """
    explicit = coordinator_address is not None or num_processes is not None
    if not explicit and detected_cluster() is None:
        return
    if explicit and process_id:
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
