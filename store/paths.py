"""Joining names that came from outside (object keys, manifest entries) onto a local folder.

An S3 key or a manifest's file name is data, not a path we chose: `../../x` or `/etc/x` joined
naively writes outside the target. Every such join goes through `contained`, which refuses a
name that would leave its folder and says which name it was.
"""

from __future__ import annotations

from pathlib import Path


class UnsafePath(ValueError):
    """A name that would resolve outside the folder it is meant to stay in."""


def contained(root: Path, name: str, what: str) -> Path:
    """`root / name`, resolved, provided it stays inside `root`."""
    root = root.resolve()
    if "\x00" in name:
        raise UnsafePath(f"{what} {name!r} contains a NUL character")
    path = (root / name).resolve()
    if path == root or not path.is_relative_to(root):
        raise UnsafePath(f"{what} {name!r} would be written outside {root}; rename it so it "
                         "stays inside its folder (no '..', no leading '/')")
    return path
