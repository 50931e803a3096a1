"""What the binaries share: their common flags (--workdir, --plugins, --step, --weights,
--pretrained), absl flag parsing that sets aside `--config.*` overrides and makes `--plugins`
paths absolute, and turning a UserError into one line on stderr (exit status 2) instead of a
traceback."""

import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

import jax
from absl import app, flags
from absl import logging as absl_logging

from recog import parallel, plugins, startup
from recog.errors import UserError

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for a multi-host run started by hand."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
_JOIN_TIMEOUT = flags.DEFINE_integer(
    "join_timeout_seconds", 300, "How long to wait for the other processes of the run."
)

WEIGHTS = ("raw", "ema")  # inference.STATE_KEYS' choices, without importing Orbax here


def workdir_flag(help_text: str = "The training run's work directory."):
    return flags.DEFINE_string("workdir", None, help_text)


def plugins_flag(help_text: str = "Plugins to load besides those the run used."):
    return flags.DEFINE_list("plugins", [], help_text)


def step_flag(help_text: str = "Checkpoint step (default: the latest; checkpoint.choose_step)."):
    return flags.DEFINE_integer("step", None, help_text)


def trained_model_flags() -> Callable[[], object]:
    """--workdir or --pretrained, --step, --weights and --plugins, as predict and export take
    them; returns a function that loads the model they name (inference.load_either)."""
    workdir = workdir_flag()
    pretrained = flags.DEFINE_string(
        "pretrained", None, "Named pretrained weights instead of a work directory: MODEL:TAG."
    )
    step = step_flag()
    weights = flags.DEFINE_enum(
        "weights", "raw", list(WEIGHTS), "raw weights, or ema: their moving average."
    )
    extra_plugins = plugins_flag()

    def load():
        from recog import inference  # TensorFlow and Orbax: imported when a model is loaded

        return inference.load_either(
            workdir.value,
            pretrained.value,
            step=step.value,
            weights=weights.value,
            extra_plugins=extra_plugins.value,
        )

    return load


CONFIG_PREFIX = "--config."
config_overrides: list[str] = []  # `a.b=value` strings from the command line


def _parse_flags(argv: list[str]) -> list[str]:
    rest = [arg for arg in argv if not arg.startswith(CONFIG_PREFIX)]
    config_overrides[:] = [arg[len(CONFIG_PREFIX) :] for arg in argv if arg not in rest]
    try:
        remaining = flags.FLAGS(rest)
    except flags.Error as e:
        sys.stderr.write(f"error: {e}\nRun with --helpfull for the flags.\n")
        sys.exit(2)
    if "plugins" in flags.FLAGS:  # a run records them in config.json, for eval from anywhere
        flags.FLAGS.plugins = plugins.absolute_paths(flags.FLAGS.plugins)
    return remaining


class _QuietLibraries(logging.Filter):
    """Orbax, TFDS and JAX log every save and read at INFO; keep their warnings, drop the chatter
    so that the progress lines stay readable."""

    NOISY = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(
            part in record.pathname for part in self.NOISY
        )


def run(main: Callable[[list[str]], None]) -> None:
    def guarded(argv: list[str]) -> None:
        try:
            parallel.initialize_distributed(
                _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _JOIN_TIMEOUT.value
            )
            if jax.process_index() > 0:  # process 0 speaks for the run
                absl_logging.set_verbosity(absl_logging.WARNING)
            main(argv)
        except UserError as e:
            sys.stderr.write(f"error: {e}\n")
            sys.exit(2)

    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
    use_compilation_cache()
    try:
        app.run(guarded, flags_parser=_parse_flags)
    except SystemExit as e:
        if not _exit_handlers_needed():
            exit_at_once(e.code)
        raise
    except BrokenPipeError:
        if not _exit_handlers_needed():
            exit_at_once(1)
        raise


def _exit_handlers_needed() -> bool:
    """Whether Python's exit must run: jax.distributed.shutdown tells a multi-process run's other
    processes, and absl writes --profile_file and --run_with_profiling output from atexit."""
    profiling = "profile_file" in flags.FLAGS and (
        flags.FLAGS.profile_file or flags.FLAGS.run_with_profiling
    )
    return jax.distributed.is_initialized() or bool(profiling)


def exit_at_once(code) -> NoReturn:
    """Ends a binary without Python's interpreter shutdown, in which TensorFlow's teardown alone
    took 1.1-1.4 s of every command that used tf.data (benchmarks/README.md, "Command
    latency"). The binaries write every file as they go (checkpoints waited for, metric lines
    and reports flushed) before they return, so what is left is flushing the output streams.
    `code` is SystemExit's: None is 0, any other non-integer is printed and is 1."""
    if code is not None and not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    jax.effects_barrier()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # whatever read the output stopped early (`--list | head`)
            code = 1
    os._exit(code or 0)


def use_compilation_cache() -> None:
    """JAX's persistent compilation cache for the binaries, in startup.cache_root()/jax, so that
    a second command on the same work directory loads its compiled programs instead of compiling
    them again (benchmarks/README.md, "Command latency"). A cache directory the user set wins."""
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(startup.cache_root() / "jax"))
