"""``manifest.json`` of an export folder: what the runtime needs besides the two graphs.

Written last by ``sppnet export`` (atomically), so a folder with a manifest
is complete. Read with :func:`read_manifest`, which checks everything a
runtime must trust before it loads a graph; each problem is one
:class:`ExportFolderError` naming the file.

Fields (``format_version`` 1):

- ``format`` ("sppnet-export"), ``format_version``;
- ``files``: {"trunk": "trunk.onnx", "head": "head.onnx"} and ``digests``
  (SHA-1 prefix of each, as :func:`detector.fileio.file_digest`);
- ``class_names``; ``head``: {"precision": "fp32" | "int8", "scorer": "svm" |
  "softmax", "svm_feature", "box_regression", "input_dim"};
- ``trunk``: {"backbone", "channels", "min_input_size"} and ``preprocess``
  (channel order, scale, mean, std: :class:`detector.features.preprocess.Preprocess`);
- ``mapping``: {"rule": "cell centres inside the window (SPP-net Appendix A)",
  "version": MAPPING_VERSION of the model, "stride", "offset"};
- ``config``: the model's full config. The runtime reads its test-time
  sections, which ``key=value`` overrides change as for a model file:
  ``features`` (scales, max_size), ``proposals`` (the search), ``pool``
  (levels, canonical_window, window_margin), ``test`` (score_threshold,
  nms_iou, max_per_class, max_per_image, threads);
- ``exported_with``: versions of torch, onnx, onnxruntime, sppnet and the opset.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..fileio import file_digest
from ..features.mapping import MAPPING_VERSION
from ..features.preprocess import Preprocess

EXPORT_FORMAT = "sppnet-export"
# Bump when the manifest or the graphs' inputs/outputs change meaning; a runtime
# refuses folders of a newer version.
EXPORT_VERSION = 1
MANIFEST = "manifest.json"
MAPPING_RULE = "cell centres inside the window (SPP-net Appendix A)"


class ExportFolderError(ValueError):
    """An export folder is missing, incomplete, changed, or of another format; the message names it."""


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: the folder, the raw JSON and the typed parts the runtime reads."""

    folder: Path
    data: dict
    preprocess: Preprocess

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.data["class_names"])

    def path_of(self, role: str) -> Path:
        return self.folder / self.data["files"][role]


def write_manifest_data(folder: Path, data: dict) -> dict:
    """``data`` with the format header and the digests of its files (which must exist)."""
    digests = {role: file_digest(folder / name) for role, name in data["files"].items()}
    return {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, **data, "digests": digests}


def is_export_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder (what ``--model`` takes for an export; a model file is a file)."""
    return Path(path).is_dir()


def read_manifest(folder: str | Path) -> Manifest:
    """The folder's manifest after checking format, version, mapping rule and files.

    Raises:
        ExportFolderError: not a folder; no manifest (not an export folder, or an
            export that did not finish); unreadable JSON or another format; a
            newer ``format_version``; a model trained with another window-mapping
            rule; a listed file missing or changed since the export.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ExportFolderError(f"{folder}: no such export folder")
    if not path.is_file():
        raise ExportFolderError(f"{folder}: not an sppnet export folder (no {MANIFEST}; "
                                "write one with sppnet export --model model.pt --out DIR)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportFolderError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise ExportFolderError(f"{path}: not an sppnet export manifest (no '{EXPORT_FORMAT}' format header)")
    version = data.get("format_version")
    if not isinstance(version, int) or version > EXPORT_VERSION or version < 1:
        raise ExportFolderError(f"{path}: export format version {version!r} is not supported (this sppnet "
                                f"reads versions up to {EXPORT_VERSION}); upgrade sppnet or export again")
    try:
        mapping = data["mapping"]["version"]
        files, digests = dict(data["files"]), dict(data["digests"])
        preprocess = Preprocess(**{k: (tuple(v) if isinstance(v, list) else v)
                                   for k, v in data["preprocess"].items()})
        missing = [k for k in ("class_names", "config", "head", "trunk") if k not in data]
        if missing:
            raise KeyError(", ".join(missing))
    except (KeyError, TypeError, ValueError) as e:
        raise ExportFolderError(f"{path}: incomplete manifest ({type(e).__name__}: {e})") from None
    if mapping != MAPPING_VERSION:
        raise ExportFolderError(f"{path}: the model was trained with window-mapping rule {mapping}, this sppnet "
                                f"maps windows with rule {MAPPING_VERSION}; its scores would differ from "
                                "training's: retrain the model and export it again")
    for role, name in files.items():
        file = folder / name
        if Path(name).name != name:
            raise ExportFolderError(f"{path}: file name {name!r} is not a plain name in the folder")
        if not file.is_file():
            raise ExportFolderError(f"{file}: missing from the export folder (copy the whole folder, "
                                    "or export again)")
        if file_digest(file) != digests.get(role):
            raise ExportFolderError(f"{file}: changed since the export (its digest differs from "
                                    f"{MANIFEST}'s); export again")
    return Manifest(folder, data, preprocess)
