"""Cron schedules and time zones as the KubeRay operator (and the Kubernetes API server) read them.

Both parse a schedule with ``cron.ParseStandard`` of github.com/robfig/cron/v3: five fields
(minute, hour, day of month, month, day of week) or a descriptor (``@hourly`` ... ``@yearly``,
``@every <Go duration>``), and load a time zone with Go's ``time.LoadLocation`` (the operator
embeds the IANA database, ``time/tzdata``). ``schedule_error`` is a port of that parser's
checks, with its messages; ``time_zone_error`` checks a zone with Python's ``zoneinfo``.

``SCHEDULE_PATTERN`` is the same grammar as one regular expression, for the chart's
values.schema.json (Helm checks values before anything renders); it cannot compare a range's
ends, which ``schedule_error`` does. ``time_zones`` lists the IANA zones of the ``tzdata``
package, for the chart's own render-time check (``files/time-zones.txt``).
"""

from __future__ import annotations

import importlib.resources
import re
import zoneinfo
from dataclasses import dataclass

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
EVERY = "@every "
# Go's time.ParseDuration: an optional sign, then one or more decimal numbers with a unit.
GO_DURATION = r"[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)"


@dataclass(frozen=True)
class Bounds:
    """A field's range and names (robfig/cron's ``bounds``)."""

    field: str
    low: int
    high: int
    digits: str
    names: tuple[str, ...] = ()
    first_name: int = 0

    def name_value(self, text: str) -> int | None:
        lowered = text.lower()
        return self.names.index(lowered) + self.first_name if lowered in self.names else None


# ``digits``: the field's numbers as a regular expression (leading zeros are fine for Atoi).
FIELDS = (Bounds("minute", 0, 59, "0*[1-5]?[0-9]"), Bounds("hour", 0, 23, "0*(1?[0-9]|2[0-3])"),
          Bounds("day of month", 1, 31, "0*([1-9]|[12][0-9]|3[01])"),
          Bounds("month", 1, 12, "0*([1-9]|1[0-2])", MONTHS, 1),
          Bounds("day of week", 0, 6, "0*[0-6]", DAYS, 0))


def schedule_error(spec: str) -> str | None:
    """What ``cron.ParseStandard(spec)`` returns as its error, None when it parses."""
    if not spec:
        return "empty spec string"
    if spec.startswith(("TZ=", "CRON_TZ=")):
        space, equals = spec.find(" "), spec.find("=")
        zone = spec[equals + 1:space] if space > equals else spec[equals + 1:]
        problem = time_zone_error(zone)
        if problem or space < 0:
            return f"provided bad location {zone}: {problem or 'no schedule after it'}"
        spec = spec[space:].strip()
    if spec.startswith("@"):
        return _descriptor_error(spec)
    fields = spec.split()
    if len(fields) != len(FIELDS):
        return (f"expected exactly {len(FIELDS)} fields, found {len(fields)}: "
                f"[{' '.join(fields)}]")
    for text, bounds in zip(fields, FIELDS, strict=True):
        for expr in (part for part in text.split(",") if part):
            problem = _range_error(expr, bounds)
            if problem:
                return f"{bounds.field}: {problem}"
    return None


def _descriptor_error(spec: str) -> str | None:
    if spec in DESCRIPTORS:
        return None
    if spec.startswith(EVERY):
        duration = spec[len(EVERY):]
        if re.fullmatch(GO_DURATION, duration):
            return None
        return f'failed to parse duration {spec}: time: invalid duration "{duration}"'
    return f"unrecognized descriptor: {spec}"


def _range_error(expr: str, bounds: Bounds) -> str | None:
    """robfig/cron ``getRange``: ``*``, ``?``, ``N``, ``N-M``, each with an optional ``/step``."""
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    if low_and_high[0] in ("*", "?"):
        start, end = bounds.low, bounds.high
    else:
        start = end = _number(low_and_high[0], bounds)
        if isinstance(start, str):
            return start
        if len(low_and_high) == 2:
            end = _number(low_and_high[1], bounds)
            if isinstance(end, str):
                return end
        elif len(low_and_high) > 2:
            return f"too many hyphens: {expr}"
    if len(range_and_step) > 2:
        return f"too many slashes: {expr}"
    if len(range_and_step) == 2:
        step = _number(range_and_step[1], None)
        if isinstance(step, str):
            return step
        if len(low_and_high) == 1:
            end = bounds.high
        if step == 0:
            return f"step of range should be a positive number: {expr}"
    if start < bounds.low:
        return f"beginning of range ({start}) below minimum ({bounds.low}): {expr}"
    if end > bounds.high:
        return f"end of range ({end}) above maximum ({bounds.high}): {expr}"
    if start > end:
        return f"beginning of range ({start}) beyond end of range ({end}): {expr}"
    return None


def _number(text: str, bounds: Bounds | None) -> int | str:
    """``parseIntOrName``: a name of the field, or a non-negative integer (Go's Atoi)."""
    named = bounds.name_value(text) if bounds else None
    if named is not None:
        return named
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax'
    if int(text) < 0:
        return f"negative number ({int(text)}) not allowed: {text}"
    return int(text)


def time_zone_error(name: str) -> str | None:
    """Why Go's ``time.LoadLocation(name)`` (with the embedded tz database) fails, or None."""
    if name in ("", "UTC", "Local"):
        return None
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone {name}"
    return None


def time_zones() -> list[str]:
    """The zone names of the IANA database shipped by the ``tzdata`` package, sorted."""
    text = importlib.resources.files("tzdata").joinpath("zones").read_text()
    return sorted(set(text.split()))


def _field_pattern(bounds: Bounds) -> str:
    names = "".join(f"|{''.join(f'[{c}{c.upper()}]' for c in name)}" for name in bounds.names)
    value = f"({bounds.digits}{names})"
    item = rf"(([*?]|{value}(-{value})?)(/0*[1-9][0-9]*)?)"
    return rf"{item}(,{item})*"


def schedule_pattern() -> str:
    """``SCHEDULE_PATTERN``: five fields in their bounds, or a descriptor."""
    fields = r"\s+".join(_field_pattern(bounds) for bounds in FIELDS)
    descriptors = "|".join(d[1:] for d in DESCRIPTORS)
    return rf"^(\s*{fields}\s*|@({descriptors})|@every {GO_DURATION})$"


SCHEDULE_PATTERN = schedule_pattern()
