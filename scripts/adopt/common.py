"""What every part of adopt shares: the refusal, compose's `${...}` syntax, YAML nodes and text edits."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Refused(Exception):
    """A compose file adopt cannot convert: one line, nothing written."""


# ---------------------------------------------------------------- compose's interpolation
def whole_ref(raw: str) -> tuple[str, str | None, str | None] | None:
    """(variable, operator, argument) when `raw` is exactly one reference: `${V}`, `${V:-x}` (nested allowed), `$V`."""
    raw = raw.strip()
    if raw.startswith("${"):
        depth = 0
        for index, char in enumerate(raw):
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    if index != len(raw) - 1:
                        return None
                    break
        else:
            return None
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", raw[2:-1], re.S)
        return (match.group(1), match.group(2), match.group(3)) if match else None
    match = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", raw)
    return (match.group(1), None, None) if match else None


def evaluate(raw: str, env: Mapping[str, str], ours: Iterable[str] = ()) -> str | None:
    """What compose makes of `raw` by hand (variables from `env`; `ours` unset); None when it has no value."""
    ref = whole_ref(raw)
    if ref is None:
        return raw
    name, op, arg = ref
    value = None if name in set(ours) else env.get(name)
    if op == ":-" and not value or op == "-" and value is None:
        return evaluate(arg or "", env, ours)
    if op in (":+", "+"):
        return evaluate(arg or "", env, ours) if (value if op == ":+" else value is not None) else ""
    return value


def used_variables(text: str) -> set[str]:
    """Every variable name a compose file interpolates (`$$` is a literal dollar)."""
    text = text.replace("$$", "")
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) | set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))


def split_colons(spec: str) -> list[str]:
    """`a:b:c` split on colons outside `${...}` (nested ones included)."""
    parts, depth, current = [], 0, ""
    for char in spec:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def ref(variable: str, default: str) -> str:
    """`${VARIABLE:-default}`, as compose interpolates it."""
    return "${" + variable + ":-" + default + "}"


def var_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def stack_name(service: str) -> str:
    name = service.lower().replace(".", "-")
    if not NAME.match(name):
        raise Refused(f"service {service!r}: its name cannot be a stack.yml name (lowercase letters, digits, '-', '_', starting with a letter)")
    return name


# ---------------------------------------------------------------- YAML nodes
def yaml_loader() -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="rt")


def parse(text: str, name: str) -> tuple[Any, Any]:
    """(data, node) of one compose file: the values (merge keys applied) and the node tree with positions."""
    from ruamel.yaml import YAML, YAMLError

    try:
        data = YAML(typ="safe", pure=True).load(text)
        node = yaml_loader().compose(text)
    except YAMLError as exc:
        raise Refused(f"{name} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise Refused(f"{name} has no `services:` mapping")
    return data, node


def is_map(node: Any) -> bool:
    return node is not None and node.id == "mapping"


def is_seq(node: Any) -> bool:
    return node is not None and node.id == "sequence"


def is_scalar(node: Any) -> bool:
    return node is not None and node.id == "scalar"


def entry(node: Any, key: str) -> tuple[Any, Any] | None:
    """(key node, value node) of `key` written in mapping `node` itself (not through a merge key)."""
    if not is_map(node):
        return None
    for k, v in node.value:
        if is_scalar(k) and k.value == key:
            return k, v
    return None


def merged_entry(node: Any, key: str) -> bool:
    """`key` reaches mapping `node` only through a merge key (`<<: *anchor`)."""
    if not is_map(node):
        return False
    for k, v in node.value:
        if is_scalar(k) and k.value == "<<":
            for base in v.value if is_seq(v) else [v]:
                if entry(base, key) or merged_entry(base, key):
                    return True
    return False


# ---------------------------------------------------------------- text edits
@dataclass
class Edit:
    start: int
    end: int
    text: str


def quoted(value: str, like: Any = None) -> str:
    """`value` as a YAML scalar in the quotes the replaced node had (double quotes by default)."""
    if like is not None and getattr(like, "style", None) == "'":
        return "'" + value.replace("'", "''") + "'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def apply_edits(text: str, edits: list[Edit]) -> str:
    # from the end, so earlier positions stay valid; at one position the edit made first ends up first
    for _, edit in sorted(enumerate(edits), key=lambda item: (item[1].start, item[1].end, item[0]), reverse=True):
        text = text[: edit.start] + edit.text + text[edit.end :]
    return text


def line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def line_end(text: str, index: int) -> int:
    """The index just past the newline ending the line that holds `index` (or the text's end)."""
    end = text.find("\n", index)
    return len(text) if end < 0 else end + 1


def insert_key(text: str, mapping: Any, lines: list[str], flow: str) -> Edit:
    """An edit adding a key to `mapping`: `lines` (block style, relative indentation) or `flow` (`key: value`)."""
    if mapping.flow_style:
        close = mapping.end_mark.index - 1
        return Edit(close, close, (", " if mapping.value else "") + flow)
    first = mapping.value[0][0]
    col = first.start_mark.column
    body = "".join(" " * col + line + "\n" for line in lines)
    start = line_start(text, first.start_mark.index)
    if not text[start : first.start_mark.index].strip():
        return Edit(start, start, body)  # before the first key, on its own line
    for _key, value in mapping.value:  # the first key follows `- `: after a scalar value's line instead
        if is_scalar(value) and "\n" not in text[value.start_mark.index : value.end_mark.index]:
            at = line_end(text, value.end_mark.index)
            return Edit(at, at, body if text[at - 1 : at] == "\n" else "\n" + body)
    raise Refused(f"line {first.start_mark.line + 1}: cannot add {flow.split(':')[0]} to this mapping; write it in block style")


def append_item(text: str, seq: Any, item: str) -> Edit:
    """An edit appending scalar `item` (already quoted if need be) to sequence `seq`."""
    if seq.flow_style or not seq.value:
        if not seq.value:
            return Edit(seq.start_mark.index, seq.end_mark.index, f"[{item}]")
        close = seq.end_mark.index - 1
        return Edit(close, close, f", {item}")
    last = seq.value[-1]
    at = line_end(text, last.end_mark.index)
    col = seq.value[0].start_mark.column
    return Edit(at, at, ("" if text[at - 1 : at] == "\n" else "\n") + " " * (col - 2) + f"- {item}\n")
