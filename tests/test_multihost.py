"""A real multi-host run: two processes on 127.0.0.1, each with 2 simulated CPU devices, joined by
jax.distributed.initialize. It trains, checkpoints, resumes, and matches one process with 4. The
processes join by explicit flags, or as the workers of a Cloud TPU VM pod slice find each other:
through the GCE metadata server, faked here."""

import http.server
import subprocess
import sys
import threading
import time
import typing

import numpy as np
from conftest import REPO, checkpoint_vector, env_with_devices, free_port, read_jsonl, run_binary

# Every step sees the whole (sliced) split and no augmentation, so the global batch is the same
# set of examples however the processes shard it; the runs then agree up to float rounding.
ARGS = [
    "--experiment=digits_cnn",
    "--config.data.train_split=train[:1200]",
    "--config.batch_size=1200",
    "--config.data.train_pipeline=",
    "--config.schedule.name=constant",
    "--config.schedule.warmup_steps=0",
    "--config.log_every=1",
    "--config.eval_every=3",
    "--config.checkpoint_every=3",
]


def run_two_processes(workdir, num_steps, log_dir):
    port = free_port()
    common = [
        sys.executable,
        "-m",
        "recog.main",
        *ARGS,
        f"--config.num_steps={num_steps}",
        f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        "--join_timeout_seconds=60",
    ]
    logs = [(log_dir / f"process{i}_{num_steps}.log").open("w") for i in range(2)]
    processes = [
        subprocess.Popen(
            [*common, f"--process_id={i}"],
            cwd=REPO,
            env=env_with_devices(2),
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    codes = [p.wait(timeout=300) for p in processes]
    texts = [(log_dir / f"process{i}_{num_steps}.log").read_text() for i in range(2)]
    assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
    return texts


def test_two_processes_train_checkpoint_resume_and_match_one_process(tmp_path):
    workdir = tmp_path / "two_processes"
    first = run_two_processes(workdir, 3, tmp_path)
    assert "on 4 device(s)" in first[0] and "Done: step 3" in first[0]
    assert "Done: step 3" not in first[1]  # only process 0 logs
    second = run_two_processes(workdir, 6, tmp_path)
    assert "Resuming from the checkpoint at step 3" in second[0]
    metrics = read_jsonl(workdir / "metrics.jsonl")  # written by process 0 alone, once a step
    assert [m["step"] for m in metrics if "train/loss" in m] == [1, 2, 3, 4, 5, 6]

    reference = tmp_path / "one_process"
    result = run_binary(
        "main", *ARGS, "--config.num_steps=6", f"--workdir={reference}", env=env_with_devices(4)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 4 device(s)" in result.stderr
    parts = ("params", "model_state")
    # Equal up to float32 reassociation: the gradient and BatchNorm reductions are summed in a
    # different order across two processes than within one. Where that moves a ReLU or max-pool
    # input across its kink, that element's derivative flips, so a few values drift further
    # over 6 steps (seen: 23 of 66,218 by up to 2.6e-4).
    two, one = checkpoint_vector(workdir, 6, parts), checkpoint_vector(reference, 6, parts)
    np.testing.assert_allclose(two, one, rtol=1e-3, atol=1e-3)
    assert np.mean(np.isclose(two, one, rtol=1e-4, atol=1e-4)) > 0.999
    final = lambda w: [m for m in read_jsonl(w / "metrics.jsonl") if "eval/accuracy" in m][-1]
    np.testing.assert_allclose(
        final(workdir)["eval/loss"], final(reference)["eval/loss"], rtol=1e-4
    )


def test_unreachable_coordinator_fails_quickly_with_a_clear_message():
    result = run_binary(
        "main",
        "--experiment=digits_cnn",
        f"--coordinator_address=127.0.0.1:{free_port()}",
        "--num_processes=2",
        "--process_id=1",
        "--join_timeout_seconds=3",
        timeout=60,
    )
    assert result.returncode == 2
    assert "error: process 1 could not reach the coordinator at 127.0.0.1:" in result.stderr
    assert "within 3 s" in result.stderr


class FakeTpuMetadata(http.server.BaseHTTPRequestHandler):
    """One worker's GCE metadata server, answering what JAX's Cloud TPU cluster detection asks
    (jax/_src/clusters/cloud_tpu_cluster.py): the worker's number and all workers' addresses."""

    attributes: typing.ClassVar[dict[str, str]] = {}

    def do_GET(self):
        key = self.path.rpartition("/instance/attributes/")[2]
        known = self.headers.get("Metadata-Flavor") == "Google" and key in self.attributes
        body = self.attributes[key].encode() if known else b"not found"
        self.send_response(200 if known else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# What a Cloud TPU VM has and this host lacks: libtpu (found, JAX marks the process as running in
# a Cloud TPU VM) and TPU chips (none found, JAX skips metadata queries). Everything after that
# is JAX's own detection, against the fake metadata server.
ON_A_TPU_VM = """
import os, runpy, sys
import jax._src.clusters.cloud_tpu_cluster as cloud_tpu_cluster
cloud_tpu_cluster.running_in_cloud_tpu_vm = True
os.environ.pop("TPU_SKIP_MDS_QUERY", None)
sys.argv[0] = "recog.main"
runpy.run_module("recog.main", run_name="__main__", alter_sys=True)
"""


def test_tpu_vm_workers_join_through_the_metadata_server(tmp_path):
    servers = []
    for worker in range(2):
        handler = type(
            f"Worker{worker}",
            (FakeTpuMetadata,),
            {
                "attributes": {
                    "agent-worker-number": str(worker),
                    "worker-network-endpoints": "127.0.0.1,127.0.0.1",
                    "tpu-env": "ACCELERATOR_TYPE: 'v4-16'\n",
                }
            },
        )
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    environment = {k: v for k, v in env_with_devices(2).items() if "proxy" not in k.lower()}
    environment["JAX_COORDINATOR_PORT"] = str(free_port())
    workdir = tmp_path / "pod"
    logs = [(tmp_path / f"worker{i}.log").open("w") for i in range(2)]
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                ON_A_TPU_VM,
                *ARGS,
                "--config.num_steps=3",
                f"--workdir={workdir}",
            ],
            cwd=REPO,
            env={**environment, "GCE_METADATA_IP": f"127.0.0.1:{server.server_address[1]}"},
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i, server in enumerate(servers)
    ]
    codes = [p.wait(timeout=300) for p in processes]
    for server in servers:
        server.shutdown()
    texts = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
    assert "on 4 device(s)" in texts[0] and "Done: step 3" in texts[0]
    assert "Done: step 3" not in texts[1]  # one run: process 0 speaks for it
    assert [m["step"] for m in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in m] == [
        1,
        2,
        3,
    ]
    assert (workdir / "checkpoints" / "3").is_dir()
    assert time.monotonic() - started < 240


def test_a_process_with_no_cluster_runs_alone():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from recog import parallel; parallel.initialize_distributed(); import jax; "
            "print(jax.distributed.is_initialized(), jax.process_count(), jax.device_count())",
        ],
        capture_output=True,
        text=True,
        env=env_with_devices(2),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "1", "2"]


STREAM_WORKER = """
import sys
import jax
import numpy as np
port, process_id, folder_path, out = sys.argv[1:]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
from recog.data import folder, train_batches

source = folder.image_folder(folder_path)
kwargs = dict(global_batch_size=16, pipeline="inception_crop(24)|flip_lr", seed=5, cache=False)
stream = train_batches(source, "train", **kwargs)
uninterrupted = [next(stream) for _ in range(12)]
start = 2 * source.num_examples("train") // 16 + 1  # the middle of the third epoch
resumed = train_batches(source, "train", start_step=start, **kwargs)
for expected in uninterrupted[start:]:
    served = next(resumed)
    for key in ("image", "label"):
        np.testing.assert_array_equal(served[key], expected[key])
np.save(out, np.stack([b["image"] for b in uninterrupted]))
"""


def test_two_processes_resume_their_data_streams_exactly(tmp_path):
    from test_data import write_photos

    from recog.data import folder

    write_photos(tmp_path / "pets")
    folder.image_folder(str(tmp_path / "pets")).prepare()  # both processes then find it prepared
    port = free_port()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                STREAM_WORKER,
                str(port),
                str(i),
                str(tmp_path / "pets"),
                str(tmp_path / f"{i}.npy"),
            ],
            cwd=REPO,
            env=env_with_devices(1),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    first, second = (np.load(tmp_path / f"{i}.npy") for i in range(2))
    assert first.shape == second.shape == (12, 8, 24, 24, 3)  # each host: half of each batch
    assert not np.array_equal(first, second)  # each its own shard
