"""Loads plugins: modules that add models, datasets or augmentations to the registries.

Three sources, in this order:
  1. every module in the repository's `plugins/` folder (`*.py` files and packages), which
     pyproject.toml installs as the package `recog_plugins` (see `package_folder`);
  2. the `--plugins=` flag: dotted module names or paths to `.py` files, comma-separated;
  3. installed distributions that declare an entry point in the group `recog.plugins`, e.g.
         [project.entry-points."recog.plugins"]
         my_models = "my_package.models"
     An entry point may name a module (importing it registers things) or a callable (called once).

A plugin only imports `recog` and calls `MODELS.register(...)` and friends; recog never imports a
plugin by name. A plugin file byte for byte the same as one already loaded (a module installed as a
package and also named by --plugins, or recorded so in a run's config.json) is loaded once, so that
its names are not registered twice.
"""

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from recog.errors import UserError

ENTRY_POINT_GROUP = "recog.plugins"
REPO_PLUGINS_PACKAGE = "recog_plugins"  # the repository's plugins/ folder

_loaded: dict[str, str] = {}  # key (path or module name) -> where it came from
_contents: dict[str, str] = {}  # sha256 of a loaded plugin file -> its key in _loaded


class PluginError(UserError):
    pass


def _fail(name: str, source: str, error: BaseException) -> PluginError:
    """The error, located at the plugin's own line that raised it (not in recog's registry)."""
    recog_folder = str(Path(__file__).parent) + os.sep
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    outside = [f for f in frames if not f.filename.startswith(recog_folder)]
    frame = (outside or frames or [None])[-1]
    where = f" (at {frame.filename}:{frame.lineno})" if frame else ""
    return PluginError(
        f"plugin {name!r} from {source} failed to load: {type(error).__name__}: {error}{where}"
    )


def is_path(item: str) -> bool:
    """Whether a --plugins item names a file or folder rather than a module."""
    return item.endswith(".py") or "/" in item or Path(item).is_dir()


def absolute_paths(items: list[str]) -> list[str]:
    """--plugins items with paths made absolute, as a run records them in config.json: eval and
    predict then find them from any directory."""
    return [str(Path(item).resolve()) if is_path(item) else item for item in items]


def _digest(file: Path | None) -> str | None:
    """The sha256 of a plugin module's file; None for a package's __init__.py, which says little
    about the package, and where there is no file."""
    if file is None or file.name == "__init__.py" or not file.is_file():
        return None
    return hashlib.sha256(file.read_bytes()).hexdigest()


def load_file(path: str | Path, source: str = "--plugins") -> None:
    path = Path(path).resolve()
    if str(path) in _loaded:
        return
    if not path.exists():
        raise PluginError(f"plugin file {str(path)!r} named by {source} does not exist.")
    target = path / "__init__.py" if path.is_dir() else path
    digest = _digest(target)
    if digest in _contents:
        _loaded[str(path)] = f"{source}; the same file as {_contents[digest]}, loaded once"
        return
    module_name = f"recog_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, target)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {str(path)!r} from {source} is not a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise _fail(str(path), source, e) from e
    _loaded[str(path)] = source
    if digest is not None:
        _contents[digest] = str(path)


def load_module(name: str, source: str = "--plugins") -> None:
    if name in _loaded:
        return
    try:
        importlib.import_module(name)
    except Exception as e:
        raise _fail(name, source, e) from e
    _loaded[name] = source


def package_folder(package: str) -> Path:
    """The folder of `recog_plugins` or `recog_experiments`, the packages that pyproject.toml's
    `package-dir` makes of the repository's plugins/ and experiments/ folders: the checkout's own
    folder in an editable install, the installed copy otherwise.

    They are namespace packages (no `__init__.py`), so the import system says where they are;
    their `__path__` may also hold a placeholder that is not a folder (setuptools' editable
    finder adds one).
    """
    try:
        locations = importlib.import_module(package).__path__
    except ModuleNotFoundError:
        locations = []
    folders = [Path(location) for location in locations if Path(location).is_dir()]
    if not folders:
        raise UserError(
            f"recog's package {package!r} is not installed: run `pip install -e .` in the "
            "repository (or `pip install .` for a copy)."
        )
    return folders[0]


def load_repo_folder(folder: Path | None = None) -> None:
    """Loads every module of `folder`, by default the repository's plugins/ folder."""
    if folder is None:
        folder = package_folder(REPO_PLUGINS_PACKAGE)
    for path in sorted(folder.iterdir()):
        is_module = path.suffix == ".py" and not path.name.startswith("_")
        is_package = path.is_dir() and (path / "__init__.py").exists()
        if is_module or is_package:
            load_file(path, source=f"the plugins folder {folder}")


def _module_file(name: str) -> Path | None:
    """The file of module `name`, found without running it (its parent packages do run)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None  # loading it reports the problem
    return Path(spec.origin) if spec is not None and spec.has_location else None


def load_entry_points() -> None:
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry-point:{entry_point.value}"
        if key in _loaded:
            continue
        dist = getattr(entry_point, "dist", None)
        source = f"entry point {entry_point.name!r}" + (f" of package {dist.name}" if dist else "")
        digest = None if entry_point.attr else _digest(_module_file(entry_point.module))
        if digest in _contents:
            _loaded[key] = f"{source}; the same file as {_contents[digest]}, loaded once"
            continue
        try:
            loaded = entry_point.load()
            if callable(loaded):
                loaded()
        except Exception as e:
            raise _fail(entry_point.value, source, e) from e
        _loaded[key] = source
        if digest is not None:
            _contents[digest] = key


def load_all(extra: str | list[str] | None = None) -> None:
    """Loads every plugin source. `extra` is the `--plugins` value: modules or .py paths."""
    load_repo_folder()
    if isinstance(extra, str):
        extra = [p for p in extra.split(",") if p.strip()]
    for item in extra or []:
        item = item.strip()
        if is_path(item):
            load_file(item)
        else:
            load_module(item)
    load_entry_points()


def loaded() -> dict[str, str]:
    """What was loaded so far, with where each came from (for `--list`)."""
    return dict(_loaded)
