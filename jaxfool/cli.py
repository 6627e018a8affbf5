"""Shared plumbing for the thin scripts: dataclass fields become flags, user errors one line.

Every field of a config dataclass becomes ``--field-name`` with its default and the field's
``help`` metadata in ``--help``. Booleans take ``--flag`` / ``--no-flag``; tuples take a
comma-separated list.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import typing
from collections.abc import Callable
from typing import Any

from jaxfool.errors import JaxfoolError


def _list_of(item: Callable[[str], Any]) -> Callable[[str], tuple]:
    """A parser of comma-separated ``item``s (``int``, ``str``, ...)."""

    def parse(text: str) -> tuple:
        return tuple(item(s.strip()) for s in text.split(",") if s.strip())

    parse.__name__ = f"a comma-separated list of {getattr(item, '__name__', 'values')}"
    return parse


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type, defaults: Any = None) -> None:
    """Adds one flag per field of ``config_cls``; values default to ``None`` (= not given)."""
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group(f"{config_cls.__name__} fields")
    for f in dataclasses.fields(config_cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name) if defaults is not None else f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f"{f.metadata.get('help', '')} (default: {shown})"
        kind = hints[f.name]
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        origin = typing.get_origin(kind)
        if origin is tuple:
            parse = _list_of(typing.get_args(kind)[0])
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            inner = [a for a in typing.get_args(kind) if a is not type(None)][0]
            parse = inner
        else:
            parse = kind
        metavar = f.name.upper()
        group.add_argument(flag, type=_typed(parse, f.name), default=None, help=help_text, metavar=metavar)


def _typed(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be {getattr(parse, '__name__', 'valid')}, got {text!r}"
            ) from None

    convert.__name__ = getattr(parse, "__name__", name)
    return convert


def overrides_from_args(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    """The fields the user actually gave on the command line."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache, so a repeated run skips compilation.

    The directory is ``$JAXFOOL_CACHE/xla`` (default ``~/.cache/jaxfool/xla``;
    ``JAXFOOL_CACHE=off`` disables it). Only programs that took over a second to compile are
    stored.
    """
    import jax

    from jaxfool.cache import cache_dir

    directory = cache_dir("xla")
    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return directory


def add_layout_flags(parser: argparse.ArgumentParser, lanes: str) -> None:
    """``--shard`` and the multi-process flags (``lanes``: what a lane is, for the help)."""
    parser.add_argument("--shard", default="auto",
                        help=f"layout over several devices: auto | none | lanes (split {lanes}) | batch (split each generation) (default: auto)")
    parser.add_argument("--distributed", action="store_true", help="join a multi-process run (jax.distributed; SLURM, Open MPI and TPU pods are detected)")
    parser.add_argument("--coordinator", default=None, help="with --distributed: host:port of process 0")
    parser.add_argument("--num-processes", type=int, default=None, help="with --distributed: number of processes")
    parser.add_argument("--process-id", type=int, default=None, help="with --distributed: this process's index")


def start_processes(args: argparse.Namespace) -> None:
    """Joins the multi-process run that :func:`add_layout_flags`' flags describe, if any."""
    from jaxfool.distributed import initialize
    from jaxfool.errors import ConfigError

    explicit = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed:
        initialize(*explicit)
    elif any(v is not None for v in explicit):
        raise ConfigError("--coordinator, --num-processes and --process-id need --distributed")


def run_main(main: Callable[[], Any]) -> None:
    """Calls ``main()``; a :class:`JaxfoolError` prints ``error: ...`` and exits with status 2.
    Ctrl-C (SIGINT) interrupts, checkpointing first, even when the script was started with
    SIGINT ignored (a background job of a non-interactive shell)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = main()
    except JaxfoolError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
