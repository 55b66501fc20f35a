"""`name -> Path`: a folder symgrad ships beside its code (templates, examples)."""

from __future__ import annotations

from pathlib import Path


def shipped(name: str) -> Path:
    """The folder `name`: inside the installed package (the wheel puts it there),
    or beside the package in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"symgrad's {name} are missing (looked beside {here})")
