"""Typed configuration: dataclasses loaded from YAML with key=value overrides.

The rules: every field has a typed default; unknown keys are an error that
names the key and the file; a YAML file holds only what differs from the
defaults; ``section.key=value`` on the command line overrides both (values are
parsed as YAML, so ``features.scales=[480,688]`` and ``finetune.enabled=false``
work). A file may start from another with ``_base_: other.yaml`` (a path
relative to the file; detectron2's ``_BASE_``, mmdetection's ``_base_``): the
base's keys, then the file's, section by section. Nothing else reads YAML.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override is wrong; the message says where and why."""


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` or raise ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg, *_) = typing.get_args(tp) or (Any,)
        items = [_check_type(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML follows YAML 1.1, which reads "1e-3" (no dot) as a string;
            # YAML 1.2 and Python read it as a number, and so do we.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                          f"valid keys are {', '.join(sorted(names))}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return obj


def to_dict(obj) -> dict:
    """Plain dict of a config dataclass (for reports and model files)."""
    return dataclasses.asdict(obj)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict:
    """['a.b=1', 'c=[1,2]'] -> nested dict, values parsed as YAML."""
    tree: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. features.scales=[688])")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def merge(base: dict, extra: dict) -> dict:
    """Recursive dict merge; ``extra`` wins."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


BASE_KEY = "_base_"  # names the file a config starts from (detectron2's _BASE_)


def load_yaml(path: str | os.PathLike) -> dict:
    """The mapping in one YAML file, as written (``_base_`` not followed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def load_yaml_chain(path: str | os.PathLike) -> list[tuple[Path, dict]]:
    """``[(file, its own keys), ...]`` from the first ``_base_`` down to ``path``.

    Each base path is relative to the file that names it; a cycle, an
    empty or missing base is a ConfigError naming the file that asks for it.
    """
    chain: list[tuple[Path, dict]] = []
    path = Path(path)
    seen = [path.resolve()]
    while True:
        data = load_yaml(path)
        has_base = BASE_KEY in data
        base = data.pop(BASE_KEY, None)
        chain.append((path, data))
        if not has_base:
            return chain[::-1]
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: {BASE_KEY} must be a file name, got {base!r}")
        nxt = path.parent / base
        if not nxt.is_file():
            raise ConfigError(f"{path}: {BASE_KEY} file {base} not found (looked for {nxt})")
        seen.append(nxt.resolve())
        if seen[-1] in seen[:-1]:
            names = " -> ".join(map(str, seen))
            raise ConfigError(f"{path}: {BASE_KEY} {base} closes a cycle ({names})")
        path = nxt


def load_config(cls: type[T], path: str | os.PathLike | None = None,
                overrides: list[str] | None = None, retired: dict[str, str] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file at ``path`` (after its bases), then ``overrides``.

    ``retired``: dotted keys an earlier version had, each with why it went; setting one
    is an error that says so (not only "unknown key").
    """
    data: dict = {}
    cfg = None
    for file, own in (load_yaml_chain(path) if path else []):
        # Check each file over its bases, so an error is blamed on the file
        # that brings it in, not on one that is fine.
        data = merge(data, own)
        cfg = _build(cls, data, str(file), retired)
    extra = parse_overrides(overrides)
    if not extra:
        return cfg if cfg is not None else _build(cls, data, "config", retired)
    where = "command line" if not path else f"command line (over {path})"
    return _build(cls, merge(data, extra), where, retired)


def _build(cls: type[T], data: dict, where: str, retired: dict[str, str] | None = None) -> T:
    for dotted, why in (retired or {}).items():
        section, key = dotted.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(f"{where}: {dotted} no longer exists ({why}); remove it")
    try:
        return from_dict(cls, data, where)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
