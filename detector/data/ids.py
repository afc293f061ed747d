"""Image ids and file names from dataset files, checked before they are joined onto a folder.

A downloaded dataset is untrusted input: an id ``../../secret`` in an
ImageSets file would make ``Annotations/<id>.xml`` read a file outside the
dataset, and an absolute COCO ``file_name`` replaces the image folder
altogether (``Path("images") / "/etc/x"`` is ``/etc/x``). The loaders refuse
both, naming the file and the line or entry; ``detect``, whose ids come from
the user's own file names, makes them safe instead (:func:`safe_image_id`).

Both separators count, ``/`` and ``\\``: on Windows ``\\`` leaves a folder too.
"""
from __future__ import annotations

import re

SEPARATORS = re.compile(r"[/\\]")
SPECIAL = (".", "..")  # names of a folder itself and of its parent


def file_name_problem(name: str) -> str | None:
    """Why ``name`` (an image id, a VOC ``<filename>``) is not one file name inside a
    folder, or None if it is."""
    if not name:
        return "is empty"
    if SEPARATORS.search(name):
        return "holds a path separator"
    if name in SPECIAL:
        return f"is {name!r}"
    if "\0" in name:
        return "holds a NUL character"
    return None


def relative_path_problem(name: str) -> str | None:
    """Why ``name`` (e.g. a COCO ``file_name``) could resolve outside the folder it is
    relative to, or None if it cannot: subfolders (``train/x.jpg``) are fine."""
    if SEPARATORS.match(name) or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in SEPARATORS.split(name):
        return "holds '..'"
    if "\0" in name:
        return "holds a NUL character"
    return None


def safe_image_id(name: str) -> str:
    """``name`` as an id that passes :func:`file_name_problem`: separators and NUL become
    ``_``, and ``.``/``..`` (or nothing) become underscores."""
    name = re.sub(r"[/\\\0]", "_", name)
    return "_" * max(len(name), 1) if name in ("", *SPECIAL) else name
