"""What every CLI command shares: the platform config, how errors end, and a quiet console.

- Bad input (a config value, a file, an option) ends in one ``error:`` line and exit status
  2; an expected failure at run time (a refused request, a model that is not there) in one
  ``error:`` line and exit status 1. Never a traceback: ``fail`` raises ``CommandError``,
  which the root group ``Commands`` prints as that one line.
- ``session`` gives the long commands (``irec run``, ``train``, ``serve``) a quiet console:
  the terminal shows only what the command prints through ``Console.echo`` (steps, epochs,
  tables); whatever Ray, Serve, Feast, BentoML and the other libraries print or log, and every
  Python warning, goes to a log file whose path is printed first. The redirection is at the
  file-descriptor level, so it also catches what C++ (Ray core) and child processes write.
  ``--verbose`` turns it off: everything on the terminal, Ray's worker logs too.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NoReturn

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from irec.config import PlatformConfig

LOG_DIR = Path("~/.cache/irec/logs")


class CommandError(Exception):
    """An expected failure: ``Commands`` prints it as one ``error:`` line, no traceback."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


# Typer's and Click's own ways a command ends (exit codes, --help, usage errors): not bugs.
TYPER_ENDINGS = (typer.Exit, typer.Abort, typer.TyperException)


class Commands(TyperGroup):
    """The root command group: how every command ends when it does not succeed.

    A ``CommandError`` is one line on stderr and its exit status (a quiet console has put the
    terminal back by then). Any other exception is a bug: one line naming it and a log file
    with its traceback, exit status 1. Click's and Typer's own exits (usage errors, --help,
    ``typer.Exit``) pass through as they are.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TYPER_ENDINGS:
            raise
        except CommandError as exc:
            typer.secho(f"error: {exc.message}", err=True, fg="red")
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:  # a bug outside a quiet console: keep its traceback
            path = log_path(ctx.invoked_subcommand or "irec")
            path.write_text(traceback.format_exc())
            typer.secho(f"error: {type(exc).__name__}: {exc} (traceback in {path})", err=True,
                        fg="red")
            raise typer.Exit(1) from None


def log_path(command: str) -> Path:
    """A new log file of ``command`` under ``LOG_DIR``."""
    path = LOG_DIR.expanduser() / f"{command}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def fail(message: str, exit_code: int = 2) -> NoReturn:
    """End the command with ``error: message`` (2: bad input; 1: a failure at run time)."""
    raise CommandError(message, exit_code)


def load_config(config: Path | None, **overrides: Any) -> PlatformConfig:
    """The preset at ``config`` (None: the defaults) with the CLI's dotted overrides."""
    try:
        return PlatformConfig.load(config, overrides)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        fail(f"invalid configuration: {exc}")


class Console:
    """The command's own output: to the terminal, whatever the libraries do with theirs."""

    def __init__(self, out: IO[str], log_path: Path | None = None) -> None:
        self.out = out
        self.log_path = log_path  # None: --verbose, nothing is redirected
        self.verbose = log_path is None

    def echo(self, message: str = "", **style: Any) -> None:
        typer.secho(message, file=self.out, **style)
        if self.log_path is not None:  # the log file reads as the whole story
            print(message, file=sys.stdout, flush=True)


@contextmanager
def session(command: str, verbose: bool) -> Iterator[Console]:
    """A quiet console for one command (see the module docs); ``verbose``: no redirection."""
    if verbose:
        yield Console(sys.stdout)
        return
    path = log_path(command)
    out = _terminal(sys.stdout, 1)
    console = Console(out, path)
    typer.secho(f"logs: {path} (--verbose shows them here)", file=out, dim=True)
    try:
        with open(path, "a", buffering=1, encoding="utf-8") as log, _redirected(log):
            try:
                yield console
            except (CommandError, *TYPER_ENDINGS):
                raise
            except Exception as exc:  # a bug, not bad input: its traceback goes to the log
                traceback.print_exc()
                raise CommandError(f"{type(exc).__name__}: {exc} (traceback in {path})",
                                   1) from exc
    finally:
        if out is not sys.stdout:
            out.close()


def _terminal(stream: IO[str], fd: int) -> IO[str]:
    """A stream on the terminal that stays there when ``fd`` is redirected."""
    try:
        if stream.fileno() == fd:
            return open(os.dup(fd), "w", buffering=1, encoding=stream.encoding,  # noqa: SIM115
                        errors="replace")
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not backed by the fd (e.g. click's test runner): it stays where it is anyway
    return stream


@contextmanager
def _redirected(log: IO[str]) -> Iterator[None]:
    """fds 1 and 2, ``sys.stdout``/``sys.stderr``, logging and warnings all into ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    streams = sys.stdout, sys.stderr
    root = logging.getLogger()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for fd in saved:
        os.dup2(log.fileno(), fd)
    sys.stdout = sys.stderr = log
    root.addHandler(handler)
    try:
        yield
    finally:
        log.flush()
        root.removeHandler(handler)
        sys.stdout, sys.stderr = streams
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def init_ray(verbose: bool, dashboard: bool = False) -> None:
    """Start Ray on this machine, or join the job's cluster under ``ray job submit``.

    Workers' and actors' output (Ray Train's per-report lines, Serve's INFO lines) is
    forwarded to this process only with ``verbose``; it stays in Ray's session logs either
    way. The dashboard is started only when asked: it costs a core at start. ``irec tune``
    asks, because Ray Train removes the workers' placement group of a trial that Tune stopped
    only once the dashboard's state API shows the trial's controller gone (without it the
    CPUs stay held and the next trial never starts).
    """
    import ray

    if not ray.is_initialized():
        ray.init(configure_logging=False, include_dashboard=dashboard, log_to_driver=verbose)
