"""The values table of charts/irec/README.md, from the helm-docs `# --` comments of values.yaml.

    python -m irec.k8s.docs            # rewrite the table between the README's markers

A `# -- text` comment (continued by the `#` lines under it) documents the key below it; a
documented map covers its children (`resources`, `nodeSelector`, ...). ``undocumented`` lists
the leaf keys no comment covers. helm-docs itself is a Go binary out of reach here; this reads
the same convention so that helm-docs can take over unchanged.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from irec.k8s.render import CHART_DIR

VALUES = CHART_DIR / "values.yaml"
README = CHART_DIR / "README.md"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(\s|$)")


@dataclass
class Row:
    key: str
    type: str
    default: str
    description: str


def documented(text: str) -> dict[str, str]:
    """{dotted key: description} of every key with a `# --` comment."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = KEY.match(line)
        if not match:
            pending = None
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if pending:
            docs[".".join(k for _, k in stack)] = " ".join(pending)
        pending = None
    return docs


def leaves(values: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves (scalars, lists, empty maps) of a values tree."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths.extend(leaves(value, f"{path}."))
        else:
            paths.append(path)
    return paths


def undocumented(text: str) -> list[str]:
    docs = documented(text)
    return [leaf for leaf in leaves(yaml.safe_load(text))
            if not any(leaf == key or leaf.startswith(f"{key}.") for key in docs)]


def rows(text: str) -> list[Row]:
    values = yaml.safe_load(text)
    table = []
    for key, description in documented(text).items():
        value = values
        for part in key.split("."):
            value = value[part]
        table.append(Row(key, _type(value), json.dumps(value), description))
    return table


def table(text: str) -> str:
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for row in rows(text):
        default = row.default.replace("|", "\\|")
        lines.append(f"| `{row.key}` | {row.type} | `{default}` | "
                     f"{row.description.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def with_table(readme: str, values_text: str) -> str:
    """The README with the table between the markers replaced."""
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{table(values_text)}\n{END}{after}"


def _type(value) -> str:
    kinds = {bool: "bool", int: "int", float: "float", str: "string", list: "list",
             dict: "object", type(None): "null"}
    return kinds[type(value)]


def main(argv: list[str] | None = None) -> None:
    readme = Path((argv or sys.argv[1:] or [str(README)])[0])
    readme.write_text(with_table(readme.read_text(), VALUES.read_text()))
    print(f"values table: wrote {readme}")


if __name__ == "__main__":
    main()
