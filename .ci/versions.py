"""Prints the installed version of every direct dependency that setup.cfg declares (install_requires and every
extra), so that a CI failure on a fresh machine names what a new upstream release changed."""

from __future__ import annotations

import configparser
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement

config = configparser.ConfigParser()
config.read(Path(__file__).resolve().parents[1] / "setup.cfg")
lines = config["options"]["install_requires"].splitlines()
for extra in config["options.extras_require"].values():
    lines += extra.splitlines()
names = sorted({Requirement(line.strip()).name for line in lines if line.strip() and not line.strip().startswith("#")},
               key=str.lower)
for name in names:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(f"{name}: not installed")
