"""What every CLI command shares: loading the platform config, and how bad input ends.

Bad input or an unreachable service ends in one ``error:`` line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError

from irec.config import PlatformConfig


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def load_config(config: Path | None, **overrides: Any) -> PlatformConfig:
    """The preset at ``config`` (None: the defaults) with the CLI's dotted overrides."""
    try:
        return PlatformConfig.load(config, overrides)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        fail(f"invalid configuration: {exc}")
