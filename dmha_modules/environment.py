"""Whether the compiled dependencies load together, said in one line.

torchaudio's compiled library loads only against the torch release it was
built for: a fresh install that pairs them wrongly (torchaudio 2.11.1 beside
torch 2.11.0) fails inside ``import speechbrain`` with an ``OSError`` about an
undefined symbol. The ``dmha`` command and ``recipes/train.py`` call
:func:`require_compiled_dependencies` before anything imports them, so such an
environment stops with the two versions and the command that repairs it.

Example
-------
>>> compiled_dependency_problem() is None
True
"""

import importlib
import importlib.metadata
import sys
from pathlib import Path

__all__ = ["compiled_dependency_problem", "require_compiled_dependencies"]

# Loaded in this order: torch first, as the others link against it; PyAV
# (``av``, FFmpeg inside its wheel) decodes AAC ``.m4a``.
COMPILED_DEPENDENCIES = ("torch", "torchaudio", "soundfile", "av")

# The tested set of versions, in a checkout; absent from an installed wheel.
LOCK_FILE = Path(__file__).resolve().parents[1] / "constraints.txt"


def installed_version(distribution):
    """The installed version of ``distribution``, or ``"not installed"``.

    Read from the package metadata, so that it works when the import fails.

    Arguments
    ---------
    distribution : str
        A distribution name, e.g. ``"torch"``.

    Returns
    -------
    str
    """
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def repair_command(failed):
    """The command that installs a working set after ``failed`` did not load.

    Arguments
    ---------
    failed : str
        The distribution whose import failed.

    Returns
    -------
    str
    """
    if LOCK_FILE.is_file():
        return f'pip install -c "{LOCK_FILE}" -e "{LOCK_FILE.parent}"'
    if failed == "torchaudio":
        # torchaudio's releases carry the number of the torch they are built for.
        torch_release = installed_version("torch").split("+")[0]
        return f'pip install "torchaudio=={torch_release}"'
    return f'pip install --force-reinstall "{failed}=={installed_version(failed)}"'


def compiled_dependency_problem():
    """Imports the compiled dependencies; says what failed, in one line.

    Returns
    -------
    str or None
        None when all of them load; otherwise which one failed, with the
        installed torch and torchaudio versions, the error (on one line) and
        the repair command.
    """
    for name in COMPILED_DEPENDENCIES:
        try:
            importlib.import_module(name)
        except (ImportError, OSError) as error:
            # One line, however many the loader's message has.
            reason = " ".join(str(error).split())[:400] or type(error).__name__
            return (
                f"{name} does not load (torch {installed_version('torch')}, torchaudio "
                f"{installed_version('torchaudio')}: {reason}); repair the environment "
                f"with: {repair_command(name)}"
            )
    return None


def require_compiled_dependencies():
    """Exits with status 1 and one line on stderr when a compiled dependency fails to load."""
    problem = compiled_dependency_problem()
    if problem is not None:
        print(f"dmha: {problem}", file=sys.stderr)
        raise SystemExit(1)
