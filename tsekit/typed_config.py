"""Typed YAML configs: a tree of dataclasses read from YAML, overridden from the command line, every key checked.

The one config engine of tsekit: experiments (``tsekit.train.config``) and codec/vocoder training
(``tsekit.codec.train``) are schemas on top of it. A schema is a dataclass whose fields are scalars, Literals,
lists, tuples, dicts, optionals or nested schema dataclasses. Loading builds that tree from plain YAML, applies
``key.sub=value`` overrides, and validates everything before any work starts, because a typo found after an hour
of training (``optim.lr`` spelled ``optim.lrate`` silently ignored) costs the hour:

- an unknown key, in the file or in an override, is an error that names the
  dotted key and lists the valid keys at that level;
- a value of the wrong type is an error naming the key, the expected type and
  what was given (an int is accepted where a float is expected, and so is a
  string like ``1e-3``, which YAML 1.1 reads as a string);
- a schema's ``check`` adds what the types alone do not say (ranges, cross-field rules, constructor arguments
  with ``checked_arguments``), raising ``ConfigProblem`` at a dotted key.

Every error is one ``TsekitError`` line that starts with the file it comes from, or with the override
(``override 'optim.lr=x'``) that caused it. Only ``yaml.safe_load`` and the safe dumper are used, so a
``!!python`` tag is refused. ``format_config`` writes every key, so its output alone rebuilds the same config.

Not pydantic: its lax mode turns ``"yes"`` into True and ``"5"`` into 5, its strict mode refuses ``1e-3`` and
lists where tuples are expected, its errors span lines and do not list the valid keys, and overrides still need
the schema walk below; translating its errors into these lines would take about the lines it saves.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import re
import types
import typing
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from tsekit import TsekitError

Config = TypeVar("Config")


class ConfigProblem(Exception):
    """A validation failure at a dotted key; the loader adds which file or override it comes from."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


class _Unsupported(Exception):
    """A type annotation the checker does not know (only possible in constructor arguments: left unchecked)."""


def load_typed(path: str | os.PathLike, schema: type[Config], check: Callable[[Config], None],
               overrides: Iterable[str] = ()) -> Config:
    """Read a YAML of ``schema``, apply ``key.sub=value`` overrides in order, build it and run ``check`` on it.

    ``check`` raises ``ConfigProblem`` for what the types do not catch; it may also fill in values resolved from
    others (it runs on every load, so the resolved config records them).
    """
    path = Path(path)
    raw = _read_sections(path, schema)
    overrides = list(overrides)
    original = copy.deepcopy(raw)
    for text in overrides:
        _apply_override(raw, text, schema, str(path))
    return _validated(raw, schema, check, str(path), overrides, original)


def build_typed(data: dict | None, schema: type[Config], check: Callable[[Config], None],
                source: str = "config") -> Config:
    """Build and check a config from plain data (a parsed YAML); errors start with ``source``."""
    return _validated({} if data is None else data, schema, check, source, [])


def config_to_dict(cfg: Any) -> dict:
    """Plain dict/list/scalar data of a config (tuples as lists), in field order."""
    return _plain(dataclasses.asdict(cfg))


def format_config(cfg: Any) -> str:
    """The resolved config as YAML (``--print-config``, config.yaml); loading it back gives the same config."""
    return yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=110)


def config_value(cfg: Any, key: str) -> str:
    """One resolved setting by dotted key (``distill.teacher``), as ``--print-value`` prints it for the recipes.

    Scalars as YAML writes them (``true``, ``0.004``), sections and lists in flow style on one line, null as the
    empty string.
    """
    value: Any = config_to_dict(cfg)
    for depth, part in enumerate(key.split(".")):
        if not isinstance(value, dict) or part not in value:
            where = ".".join(key.split(".")[:depth]) or "the config"
            known = ", ".join(value) if isinstance(value, dict) else f"a {type(value).__name__}, not a section"
            raise TsekitError(f"config has no {key}: {where} has {known}")
        value = value[part]
    if value is None:
        return ""
    # a bare scalar document ends with "...": the value is the first line
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=True, width=float("inf"))
    return text.splitlines()[0]


class _Dumper(yaml.SafeDumper):
    """yaml.safe_dump's dumper, writing lists of scalars on one line (``betas: [0.9, 0.999]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as a YAML scalar/list/mapping)."""
    key, sep, raw_value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(part.strip() for part in parts):
        raise TsekitError(f"override {text!r}: expected key.sub=value")
    return [part.strip() for part in parts], parse_yaml_value(raw_value, f"override {text!r}")


def parse_yaml_value(text: str, blame: str) -> Any:
    """A value given on the command line, as YAML (scalar, list or mapping); ``yaml.safe_load``, so a ``!!python``
    tag is refused. Errors are one line starting with ``blame`` (the option as given)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TsekitError(f"{blame}: value is not valid YAML: {_one_line(e)}") from None


def checked_arguments(cls: type, given: dict, key: str, owner: str, complete: bool = False,
                      filled_later: Collection[str] = ()) -> dict:
    """``given`` as keyword arguments of ``cls``'s constructor (the config's ``key``, e.g. ``model.params``).

    Names it does not take are problems listing the ones it does (any name goes when it takes ``**kwargs``);
    with ``complete``, so is a missing argument without a default, except those in ``filled_later``. Values are
    coerced to the annotations as a schema's are (unresolvable or unknown annotations are not checked).
    ``owner`` names ``cls`` in messages (``model spex_plus``).
    """
    signature = dict(list(inspect.signature(cls.__init__).parameters.items())[1:])
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        return given
    signature = {name: p for name, p in signature.items() if p.kind != inspect.Parameter.VAR_POSITIONAL}
    for name in given:
        if name not in signature:
            raise ConfigProblem(f"{key}.{name}", f"unknown key '{key}.{name}'; valid parameters of {owner}: "
                                                 f"{', '.join(signature) or '(none)'}")
    for name, parameter in signature.items():
        if complete and parameter.default is parameter.empty and name not in given and name not in filled_later:
            raise ConfigProblem(f"{key}.{name}", f"missing key '{key}.{name}' ({owner} has no default for it)")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001  (annotations we cannot resolve are simply not type-checked)
        hints = {}
    params = dict(given)
    for name, value in params.items():
        if name in hints:
            try:
                params[name] = _coerce(value, hints[name], f"{key}.{name}")
            except _Unsupported:
                pass
    return params


def require(ok: bool, key: str, what: str, value: Any) -> None:
    """A range or rule a check states: ``key: must be <what>, got <value>`` unless ``ok``."""
    if not ok:
        raise ConfigProblem(key, f"{key}: must be {what}, got {_show(value)}")


# ---------------------------------------------------------------------------------------------------------
# reading and validation


def _read_sections(path: Path, schema: type) -> dict:
    """The plain data of a config file: a mapping of ``schema``'s sections (empty file: {}).

    One-line errors for a missing file, invalid YAML or anything but a mapping.
    """
    if not path.is_file():
        raise TsekitError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise TsekitError(f"{path}: not valid YAML: {_one_line(e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TsekitError(f"{path}: expected a mapping of sections ({', '.join(_field_names(schema))}),"
                          f" got {_kind(raw)}")
    return raw


def _validated(raw: dict, schema: type, check: Callable, source: str, overrides: list[str],
               original: dict | None = None) -> Any:
    """The config of ``raw`` (the file's data with ``overrides`` applied; ``original`` = without them)."""
    try:
        return _checked(raw, schema, check)
    except ConfigProblem as problem:
        blame = _blame(problem, schema, check, source, overrides, original)
        raise TsekitError(f"{blame}: {problem.message}") from None


def _checked(raw: dict, schema: type, check: Callable) -> Any:
    cfg = _build(schema, raw, "")
    check(cfg)
    return cfg


def _blame(problem: ConfigProblem, schema: type, check: Callable, source: str, overrides: list[str],
           original: dict | None) -> str:
    """Who to name in an error: the file when it fails alone the same way, else the override to blame.

    That is the last override whose key contains, or lies inside, the failing
    key; else the last one in the same section (``scheduler.decay=exponential``
    for a ``scheduler.min_lr`` problem); else all of them.
    """
    if not overrides:
        return source
    if original is not None:
        try:
            _checked(copy.deepcopy(original), schema, check)
        except ConfigProblem as alone:
            if alone.message == problem.message:
                return source
    failing = problem.key.split(".")
    keys = [(text, text.partition("=")[0].strip().split(".")) for text in reversed(overrides)]
    for text, parts in keys:
        common = min(len(parts), len(failing))
        if parts[:common] == failing[:common]:
            return f"override {text!r}"
    for text, parts in keys:
        if parts[0] == failing[0]:
            return f"override {text!r}"
    return f"{source} with overrides {' '.join(overrides)}"


def _build(cls: type, value: Any, key: str) -> Any:
    """A dataclass instance from a mapping: unknown keys and missing required keys are problems."""
    if not isinstance(value, dict):
        raise ConfigProblem(key, f"{key}: expected a mapping, got {_kind(value)} {_show(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in value:
        if name not in fields:
            where = f"under {key!r}" if key else "at the top level"
            raise ConfigProblem(_join(key, str(name)), f"unknown key {_join(key, str(name))!r};"
                                                       f" valid keys {where}: {', '.join(fields)}")
    kwargs = {}
    for name, spec in fields.items():
        if name in value:
            kwargs[name] = _coerce(value[name], hints[name], _join(key, name))
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigProblem(_join(key, name), f"missing key {_join(key, name)!r}")
    return cls(**kwargs)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (and converted: int -> float, list -> tuple)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigProblem:
                if len(options) == 1:
                    break
        raise _type_problem(value, tp, key)
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise ConfigProblem(key, f"{key}: expected one of {', '.join(map(str, args))}, got {_show(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list or tp is list:
        if isinstance(value, (list, tuple)):
            item = args[0] if args else Any
            return [_coerce(v, item, f"{key}.{i}") for i, v in enumerate(value)]
    elif origin is tuple or tp is tuple:
        if isinstance(value, (list, tuple)):
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                item = args[0] if args else Any
                return tuple(_coerce(v, item, f"{key}.{i}") for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(_coerce(v, a, f"{key}.{i}") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            item = args[1] if args else Any
            return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    else:
        raise _Unsupported(tp)
    raise _type_problem(value, tp, key)


def _type_problem(value: Any, tp: Any, key: str) -> ConfigProblem:
    return ConfigProblem(key, f"{key}: expected {_type_name(tp)}, got {_kind(value)} {_show(value)}")


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list or tp is list:
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is tuple or tp is tuple:
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} {_type_name(args[0])}"
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


# ---------------------------------------------------------------------------------------------------------
# overrides


def _apply_override(raw: dict, text: str, schema: type, source: str) -> None:
    """Set one ``a.b.c=value`` in the raw config, checking each key of the path against the schema.

    Sections absent from the file are filled with their defaults first, so
    ``loss.1.weight=0.2`` works on the default loss list. The value replaces
    what is there (a mapping value replaces the whole section); its type is
    checked afterwards with the rest of the config.
    """
    parts, value = parse_override(text)
    blame = f"override {text!r}"
    tp: Any = schema
    node: Any = raw
    for depth, part in enumerate(parts):
        key, parent = ".".join(parts[: depth + 1]), ".".join(parts[:depth])
        last = depth == len(parts) - 1
        tp = _without_none(tp)
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            fields = {f.name: f for f in dataclasses.fields(tp)}
            if part not in fields:
                where = f"under {parent!r}" if parent else "at the top level"
                raise TsekitError(f"{blame}: unknown key {key!r}; valid keys {where}: {', '.join(fields)}")
            if not isinstance(node, dict):
                raise TsekitError(f"{source}: {parent}: expected a mapping, got {_kind(node)} {_show(node)}")
            tp = typing.get_type_hints(tp)[part]
            if not last and node.get(part) is None:
                node[part] = _default_plain(fields[part])
        elif origin in (list, tuple):
            if not isinstance(node, list):
                raise TsekitError(f"{source}: {parent}: expected a list, got {_kind(node)} {_show(node)}")
            if not part.isdigit() or int(part) >= len(node):
                raise TsekitError(f"{blame}: {key}: {parent} is a list of {len(node)} items; "
                                  f"use an index 0..{len(node) - 1} or set the whole list")
            part = int(part)
            args = typing.get_args(tp)
            tp = args[0] if len(args) == 2 and args[1] is Ellipsis else args[min(part, len(args) - 1)]
        elif origin is dict or tp is Any:
            if not isinstance(node, dict):
                raise TsekitError(f"{blame}: {key}: {parent} is {_kind(node)}, not a mapping")
            tp = typing.get_args(tp)[1] if origin is dict else Any
            if not last and not isinstance(node.get(part), dict):
                node[part] = {}
        else:
            raise TsekitError(f"{blame}: {key}: {parent} is a single value ({_type_name(tp)}), it has no keys")
        if last:
            node[part] = value
        else:
            node = node[part]


def _default_plain(spec: dataclasses.Field) -> Any:
    """A field's default as plain data (a section the file left out), {} for a required section."""
    if spec.default_factory is not dataclasses.MISSING:
        value = spec.default_factory()
    elif spec.default is not dataclasses.MISSING:
        value = spec.default
    else:
        return {}
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, list):
        return [_plain(dataclasses.asdict(v)) if dataclasses.is_dataclass(v) else _plain(v) for v in value]
    return _plain(value)


# ---------------------------------------------------------------------------------------------------------
# small helpers


def _without_none(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return tp


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _show(value: Any, limit: int = 60) -> str:
    text = repr(_plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
