"""The CLI floor: a command is a typed function whose parameters are dataclasses; its flags come from their fields.

    @dataclass
    class Show:
        file: str = opt(positional=True)      # head-score file
        show: int = 20                        # how many heads to print

    def _show(model: ModelOptions, sel: Show) -> None:
        '''print the top heads of a file

        (the rest of the docstring is the command's --help description)'''

A field becomes `--field-name` (type, default and list-ness from its annotation; help from `opt(help=...)` or
the comment after the field); a field of a dataclass type contributes its own fields. Two parameters may share
a field name (one flag fills both; their defaults must agree). Defaults live only in the dataclasses: the parser
records what was given, the dataclass fills the rest, so a command-line default cannot drift from its config.
A command with `config_file=True` also takes `--config FILE` (YAML or JSON, keys are field names); flags given
on the command line override the file.

argparse is used here and nowhere else; usage errors are a HeadlabError (one line, exit status 2), and every
number, device and output location is checked the same way on every command (headlab/core/inputs.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any, NoReturn

from headlab.core.errors import HeadlabError
from headlab.core.inputs import check_device, check_out, number_check


@dataclass(frozen=True)
class Flag:
    """How one dataclass field appears on the command line; every setting is optional."""

    help: str | None = None
    flag: str | None = None               # the option's name when it is not --field-name
    aliases: tuple[str, ...] = ()         # more names for the same option
    choices: tuple | None = None
    metavar: str | tuple | None = None
    positional: bool = False
    required: bool = False                # also implied by a field without a default
    repeat: bool = False                  # `--x a --x b` instead of `--x a b`
    parse: Callable[[Any], Any] | None = None  # given text (or list of texts) -> field value
    hidden: bool = False                  # not on the command line: the dataclass default applies


def opt(default: Any = MISSING, *, factory: Any = MISSING, **settings: Any) -> Any:
    """A dataclass field with command-line settings (see Flag) in its metadata."""
    return field(default=default, default_factory=factory, metadata={"cli": Flag(**settings)})


def given(obj: Any) -> frozenset[str]:
    """Names of the fields of a command's dataclass argument that were set by a flag or a config file."""
    return getattr(obj, "_given", frozenset())


@dataclass
class Command:
    """One sub-command: `path` ("heads show"), the function it runs, and per-command settings."""

    path: str
    run: Callable[..., None]
    flags: dict[str, Flag] = field(default_factory=dict)  # per-field settings over the dataclass's own
    hide: tuple[str, ...] = ()          # fields of the parameters that this command does not offer
    config_file: bool = False           # accept --config FILE
    whole_output: bool = False          # --out is written whole (staged, then moved in): see headlab.cli
    out: str = "folder"                 # what --out names: "folder" or "file"


@dataclass
class _Option:
    dest: str
    names: list[str]
    convert: Callable[[str], Any] | None
    nargs: int | str | None
    kind: str                 # "bool", "value", "list", "tuple", "json"
    flag: Flag
    required: bool


# ---- fields -> options --------------------------------------------------------------------------------------


def _comments(cls: type) -> dict[str, str]:
    """Field -> the comment after it in the class body: the help text where no Flag(help=...) is given."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
            if m:
                out[m.group(1)] = m.group(2).strip()
    return out


def _unwrap(hint: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _leaves(cls: type) -> list[tuple[dataclasses.Field, Any, type]]:
    """(field, type hint, owning class) of every field, the fields of dataclass-typed fields flattened."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(hint):
            out += _leaves(hint)
        else:
            out.append((f, hint, cls))
    return out


def _merged(base: Flag, override: Flag | None) -> Flag:
    """A command's settings for a field over the field's own: only the settings the command gives replace."""
    if override is None:
        return base
    plain = Flag()
    return dataclasses.replace(base, **{f.name: getattr(override, f.name) for f in dataclasses.fields(Flag)
                                        if getattr(override, f.name) != getattr(plain, f.name)})


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise HeadlabError(f"invalid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise HeadlabError(f"expected a JSON object such as '{{\"rope_type\": \"linear\", \"factor\": 4}}' "
                           f"(got {text!r})")
    return value


def _scalar(kind: Any, dest: str, command: Command) -> Callable[[str], Any] | None:
    if kind in (int, float):
        return number_check(kind, dest)
    if dest == "device":
        return check_device
    if dest == "out":
        return lambda text: str(check_out(text, command.out))
    return None


def _option(f: dataclasses.Field, hint: Any, flag: Flag, command: Command) -> _Option:
    dest = f.name
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    required = flag.required or _default(f) is MISSING
    if flag.parse is not None:  # its own reading of the text
        kind, nargs, convert = "value", None, None
    elif hint is bool:
        kind, nargs, convert = "bool", 0, None
    elif origin is list:
        kind, nargs, convert = "list", ("+" if not flag.repeat else None), _scalar(args[0], dest, command)
    elif origin is tuple:
        kind, nargs, convert = "tuple", len(args), _scalar(args[0], dest, command)
    elif hint is dict or origin is dict:
        kind, nargs, convert = "json", None, _json_object
    else:
        kind, nargs, convert = "value", None, _scalar(hint, dest, command)
    names = [dest] if flag.positional else [flag.flag or f"--{dest.replace('_', '-')}", *flag.aliases]
    return _Option(dest, names, convert, nargs, kind, flag, required)


def _help(option: _Option, f: dataclasses.Field, comment: str | None) -> str:
    text = option.flag.help or comment or ""
    default = _default(f)
    unset = default is MISSING or default is None or default is False or default in ([], ())
    if not unset and "default" not in text and not option.flag.positional:
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        text = f"{text} (default: {shown})" if text else f"default: {shown}"
    if option.required and not option.flag.positional:
        text = f"{text} (required)" if text else "required"
    return text.replace("%", "%%")


# ---- the parser -----------------------------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as a HeadlabError (one line, exit status 2), the command and option named."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        raise HeadlabError(f"{command}: {message}" if command else message)

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        try:
            return super()._get_value(action, arg_string)
        except HeadlabError as e:
            raise argparse.ArgumentError(action, str(e)) from None


def _params(command: Command) -> list[tuple[str, type]]:
    hints = typing.get_type_hints(command.run)
    return [(name, hints[name]) for name in inspect.signature(command.run).parameters
            if dataclasses.is_dataclass(hints.get(name))]


def _doc(run: Callable) -> tuple[str, str]:
    doc = inspect.getdoc(run) or ""
    head, _, rest = doc.partition("\n")
    return head.strip(), " ".join(rest.split())


@dataclass
class _Built:
    parser: OneLineParser
    options: dict[str, _Option]


def _add_command(sub: Any, name: str, command: Command) -> _Built:
    head, description = _doc(command.run)
    parser = sub.add_parser(name, help=head.replace("%", "%%"), description=(description or head).replace("%", "%%"))
    options: dict[str, _Option] = {}
    defaults: dict[str, Any] = {}
    for _, cls in _params(command):
        comments = _comments(cls)
        for f, hint, owner in _leaves(cls):
            default = _default(f)
            if f.name in options:  # shared: one flag fills both; a second default must not disagree
                if f.name in defaults and default is not MISSING and default != defaults[f.name]:
                    raise TypeError(f"{command.path}: field {f.name!r} defaults to {defaults[f.name]!r} in one "
                                    f"parameter and {default!r} in {owner.__name__}")
                continue
            flag = _merged(f.metadata.get("cli") or Flag(), command.flags.get(f.name))
            if flag.hidden or f.name in command.hide:
                continue
            option = _option(f, hint, flag, command)
            options[f.name], defaults[f.name] = option, default
            kwargs: dict[str, Any] = {"help": _help(option, f, comments.get(f.name)), "default": argparse.SUPPRESS}
            if option.kind == "bool":
                kwargs["action"] = "store_true"
            else:
                kwargs.update(type=option.convert, metavar=flag.metavar, choices=flag.choices)
                if option.nargs is not None:
                    kwargs["nargs"] = option.nargs
                if flag.repeat:
                    kwargs["action"] = "append"
            if flag.positional:
                kwargs.pop("default")
            else:
                kwargs["dest"] = f.name
            parser.add_argument(*option.names, **kwargs)
    if command.config_file:
        parser.add_argument("--config", default=argparse.SUPPRESS, dest="config",
                            help="YAML or JSON file of these settings (keys: the option names with _ for -); "
                                 "options given here override it")
    parser.set_defaults(_command=command)
    return _Built(parser, options)


class Cli:
    """The parser of a program built from its commands; `parse` gives (command, given values)."""

    def __init__(self, prog: str, description: str, commands: list[Command], groups: dict[str, str]):
        self.parser = OneLineParser(prog=prog, description=description)
        self.parser.add_argument("--verbose", action="store_true",
                                 help="show library logging, warnings and per-model loading bars (off by default)")
        self.built: dict[str, _Built] = {}
        subs: dict[str, Any] = {"": self.parser.add_subparsers(dest="command", required=True)}
        for command in commands:
            *group, name = command.path.split()
            for depth in range(1, len(group) + 1):
                key = " ".join(group[:depth])
                if key not in subs:
                    parent = subs[" ".join(group[:depth - 1])]
                    p = parent.add_parser(group[depth - 1], help=groups.get(key))
                    subs[key] = p.add_subparsers(dest=f"{key.replace(' ', '_')}_command", required=True)
            self.built[command.path] = _add_command(subs[" ".join(group)], name, command)

    def parse(self, argv: list[str] | None) -> tuple[Command, dict[str, Any], bool]:
        ns = vars(self.parser.parse_args(argv))
        command: Command = ns.pop("_command")
        built = self.built[command.path]
        values = {k: v for k, v in ns.items() if k in built.options}
        if command.config_file and "config" in ns:
            values = {**_read_config(ns["config"], built.options), **values}
        missing = [o.names[0] for o in built.options.values() if o.required and o.dest not in values]
        if missing:
            built.parser.error(f"the following arguments are required: {', '.join(missing)}")
        for dest, value in values.items():
            option = built.options[dest]
            if option.flag.parse is not None:
                values[dest] = option.flag.parse(value)
        return command, values, ns.get("verbose", False)


def _read_config(path: str, options: dict[str, _Option]) -> dict[str, Any]:
    """A --config file's settings, each read and checked as its flag would be; errors name the file and key."""
    from headlab.core.io import read_document

    data = read_document(path)
    if not isinstance(data, dict):
        raise HeadlabError(f"{path}: expected a mapping of option names to values")
    out: dict[str, Any] = {}
    for key, value in data.items():
        option = options.get(str(key).replace("-", "_"))
        if option is None or option.flag.positional:
            known = ", ".join(sorted(d for d, o in options.items() if not o.flag.positional))
            raise HeadlabError(f"{path}: unknown field '{key}' (known: {known})")
        try:
            out[option.dest] = _config_value(option, value)
        except HeadlabError as e:
            raise HeadlabError(f"{path}: field '{key}' {e}") from None
    return out


def _config_value(option: _Option, value: Any) -> Any:
    def one(v: Any) -> Any:
        if isinstance(v, (dict, list, bool)) or v is None:
            raise HeadlabError(f"must be a single value (got {v!r})")
        text = str(v)
        if option.flag.choices is not None and text not in map(str, option.flag.choices):
            raise HeadlabError(f"must be one of {', '.join(map(str, option.flag.choices))} (got {text!r})")
        return option.convert(text) if option.convert else text

    if option.kind == "bool":
        if not isinstance(value, bool):
            raise HeadlabError(f"must be true or false (got {value!r})")
        return value
    if option.kind == "json":
        if not isinstance(value, dict):
            raise HeadlabError(f"must be a mapping (got {value!r})")
        return value
    if option.kind in ("list", "tuple") or option.flag.repeat:
        if not isinstance(value, list) or not value:
            raise HeadlabError(f"must be a non-empty list (got {value!r})")
        if option.kind == "tuple" and len(value) != option.nargs:
            raise HeadlabError(f"must be a list of {option.nargs} values (got {value!r})")
        return [one(v) for v in value]
    return one(value)


# ---- values -> the function's arguments ---------------------------------------------------------------------


def build(cls: type, values: dict[str, Any]) -> Any:
    """An instance of `cls` from the given values (by field name); fields not given keep their defaults."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = build(hint, values)
        elif f.name in values:
            value = values[f.name]
            kwargs[f.name] = tuple(value) if typing.get_origin(hint) is tuple and value is not None else value
        elif _default(f) is MISSING:
            kwargs[f.name] = None  # filled by the command from a shared option (e.g. --model)
    obj = cls(**kwargs)
    object.__setattr__(obj, "_given", frozenset(n for n in values if n in {f.name for f in dataclasses.fields(cls)}))
    return obj


def invoke(command: Command, values: dict[str, Any]) -> None:
    """Run the command with one dataclass instance per parameter."""
    command.run(**{name: build(cls, values) for name, cls in _params(command)})
