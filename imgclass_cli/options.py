"""One declaration per command-line option: its flags, help, default per command, range and environment variable.

A config dataclass (config.py) declares each field with `option(...)`. From that one declaration come the field and
its default for every command (`defaults`), the CLI's parameters (cli.py builds them, with the range as Typer's
min/max), and the validation of the same field read back from a file (`check_field`). No Typer here: the CLI
module turns a `Declared` into a Typer option.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from imgclass_cli.errors import ImgclassError

_UNSET = object()


@dataclass(frozen=True)
class Option:
    """How a config field appears on the command line. `per_command` overrides any of these (and the default) for
    one command: finetune's --epochs means something else than train's."""

    flags: tuple[str, ...]
    help: str
    range: tuple[float, float] | None = None  # inclusive; math.inf for no upper bound
    cap: float | None = None  # an upper bound on the value read back from a file (memory, time), not on the CLI
    env: tuple[str, ...] = ()
    show_default: str | bool | None = None  # a text for [default: ...] (an automatic rule), or False to hide it
    metavar: str | None = None
    parse: Callable[[str], object] | None = None  # text -> value, raising ImgclassError (e.g. '100MB' -> bytes)
    commands: tuple[str, ...] | None = None  # the commands that have it; None: every command of its dataclass
    per_command: Mapping[str, Mapping] = field(default_factory=dict)


@dataclass(frozen=True)
class Declared:
    """One field's option as a given command has it."""

    name: str  # the dataclass field, and the parameter name
    hint: object  # the field's type
    default: object
    option: Option


def option(default, *flags: str, help: str, range: tuple[float, float] | None = None, cap: float | None = None,
           env: str | tuple = (),
           show_default: str | bool | None = None, metavar: str | None = None, parse=None,
           commands: tuple[str, ...] | None = None, **per_command: Mapping):
    """A dataclass field declared as an option: `lr: float = option(1e-3, "--learning-rate", help=...)`.
    Keyword arguments named after a command override the declaration there: `finetune={"default": 5}`."""
    opt = Option(tuple(flags), help, range, cap, (env,) if isinstance(env, str) else tuple(env), show_default,
                 metavar, parse, commands, dict(per_command))
    for command, override in per_command.items():
        unknown = set(override) - {f.name for f in dataclasses.fields(Option)} - {"default"}
        if unknown:
            raise TypeError(f"option {flags[0]}: unknown override(s) {sorted(unknown)} for {command}")
    return field(default=default, metadata={"option": opt})


def declared(cls, command: str) -> list[Declared]:
    """The options `command` has among the fields of `cls`, in field order, with that command's defaults."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        opt = f.metadata.get("option")
        if opt is None or (opt.commands is not None and command not in opt.commands):
            continue
        override = dict(opt.per_command.get(command, {}))
        default = override.pop("default", f.default)
        found.append(Declared(f.name, hints[f.name], default, dataclasses.replace(opt, **override)))
    return found


def defaults(cls, command: str, values: Mapping | None = None):
    """An instance of `cls` with `command`'s defaults (and `values` on top)."""
    base = {d.name: d.default for d in declared(cls, command)}
    if any(f.name == "command" for f in dataclasses.fields(cls)):
        base["command"] = command
    return cls(**{**base, **(values or {})})


def commands_of(cls) -> set[str]:
    """Every command named by an option of `cls` (in `commands` or as an override)."""
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        opt = f.metadata.get("option")
        if opt is not None:
            names |= set(opt.commands or ()) | set(opt.per_command)
    return names


# ---------------------------------------------------------------- values read back from files

_INVALID = object()


def check_field(value, hint, bounds: tuple[float, float] | None):
    """`value` (from JSON) converted to `hint` (str, int, float, bool, an Enum, or X | None) within bounds, or
    `INVALID`."""
    choices = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None:
        return None if type(None) in choices else _INVALID
    for t in choices:
        if t is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue
        if t is str and isinstance(value, str) and "\0" not in value:
            return value
        if isinstance(t, type) and issubclass(t, Enum):
            try:
                return t(value)
            except ValueError:
                continue
        if t is int and isinstance(value, int) or t is float and isinstance(value, (int, float)):
            if not math.isfinite(value) or (bounds and not bounds[0] <= value <= bounds[1]):
                return _INVALID
            return t(value)
    return _INVALID


INVALID = _INVALID


def bounds_of(cls, name: str) -> tuple[float, float] | None:
    """What a file may hold in field `name` of `cls`: the widest range any command gives it, up to its cap."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    opt = f.metadata.get("option")
    if opt is None:
        return None
    ranges = [r for r in [opt.range, *(o.get("range") for o in opt.per_command.values())] if r]
    if not ranges:
        return None
    hi = max(r[1] for r in ranges)
    return min(r[0] for r in ranges), hi if opt.cap is None else min(hi, opt.cap)


# ---------------------------------------------------------------- option values that are text

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
MIN_SHARD_SIZE, MAX_SHARD_SIZE = 10**3, 10**12


def parse_size(text: str, option_name: str = "--shard-size") -> int:
    """'100MB', '64 MiB', '250000' -> bytes (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    size = int(float(m.group(1)) * _UNITS[unit]) if m and unit in _UNITS else None
    if size is None or not MIN_SHARD_SIZE <= size <= MAX_SHARD_SIZE:
        raise ImgclassError(f"must be a size between {MIN_SHARD_SIZE // 1000} KB and {MAX_SHARD_SIZE // 10**9} GB, "
                            f"e.g. 100MB, 512KB or 1GB; got {text}")
    return size


def parse_shard(text: str) -> tuple[int, int]:
    """--shard I/N: part I (1-based, like CI matrix indices) of N; 1 <= I <= N."""
    if isinstance(text, tuple):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    i, n = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    if m is None or not 1 <= i <= n:
        hint = " (I counts from 1: a 0-based index k is --shard k+1/N)" if i == 0 else ""
        raise ImgclassError(f"must be I/N with 1 <= I <= N, e.g. 2/4 for the second of 4 parts{hint}; got {text}")
    return i, n
