"""Where commands write: every output location is checked before any work, and earlier results are never replaced
unasked.

- `check_output` refuses, in one line naming the option, a location that cannot be written: a file where a folder
  is wanted (or the reverse), a path under a file, a folder without write permission (or on a read-only file
  system). Without it, such a location fails late, after the model loaded or trained, with a raw
  ``PermissionError`` or ``NotADirectoryError``.
- `refuse_replacing` is the one rule for results already there: a command replaces them only with ``--force``
  (training's ``--overwrite true``, TRL's name). Workflows resume their own run folders instead (``--fresh``
  starts over).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from prompt_pool import UserError


def check_output(path: str | Path, option: str, kind: Literal["folder", "file"] = "folder") -> Path:
    """Refuse ``path`` (given as ``option``) unless a ``kind`` can be written there; returns it as a `Path`.

    Nothing is created: a missing folder is made later by the command, so the nearest existing folder above it
    must be writable. Files are written by replacing them (write a temporary file, rename), so a file's folder
    must be writable, not the file itself.
    """
    path = Path(path).expanduser()
    if path.exists():
        if kind == "folder" and not path.is_dir():
            raise UserError(f"{option} {path} is a file: name a folder (it is created if missing)")
        if kind == "file" and path.is_dir():
            raise UserError(f"{option} {path} is a folder: name a file")
        folder = path if kind == "folder" else path.absolute().parent
    else:
        folder = next(p for p in path.absolute().parents if p.exists())
        if not folder.is_dir():
            raise UserError(f"{option} {path} cannot be created: {folder} is a file, not a folder")
    if not _writable(folder):
        where = "" if folder == path else f" ({folder} is not)"
        raise UserError(f"{option} {path} is not writable{where}: choose another location or change its permissions")
    return path


def _writable(folder: Path) -> bool:
    # The process's effective user decides, as when it writes; access() also reports a read-only file system.
    return os.access(folder, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)


def refuse_replacing(path: str | Path, option: str, held: list[str], force: bool) -> None:
    """Refuse to write over ``held`` (what ``path`` already holds from an earlier run; nothing when empty) unless
    ``force``."""
    if held and not force:
        listed = ", ".join(held[:3]) + (" ..." if len(held) > 3 else "")
        raise UserError(f"earlier results are in {option} {path} ({listed}): choose another {option}, or pass --force "
                        "to replace them")
