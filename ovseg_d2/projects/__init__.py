"""Method packages: `projects/<method>/` of the source tree, imported as `ovseg_d2.projects.<method>`.

A regular install maps them through setup.py's `package_dir`. In an editable install (or when the
repository is on sys.path) the folder is found here, by extending this package's search path.
"""
from pathlib import Path

_SOURCE_PROJECTS = Path(__file__).resolve().parents[2] / "projects"
if _SOURCE_PROJECTS.is_dir() and str(_SOURCE_PROJECTS) not in __path__:
    __path__.append(str(_SOURCE_PROJECTS))
