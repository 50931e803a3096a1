"""What the binaries share: absl flag parsing that sets aside `--config.*` overrides and makes
`--plugins` paths absolute, and turning a UserError into one line on stderr (exit status 2)
instead of a traceback."""

import logging
import sys
from collections.abc import Callable

import jax
from absl import app, flags
from absl import logging as absl_logging

from recog import parallel, plugins
from recog.errors import UserError

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for a multi-host run started by hand."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
_JOIN_TIMEOUT = flags.DEFINE_integer(
    "join_timeout_seconds", 300, "How long to wait for the other processes of the run."
)

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
    app.run(guarded, flags_parser=_parse_flags)
