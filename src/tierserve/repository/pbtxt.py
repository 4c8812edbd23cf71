"""Triton's ``config.pbtxt`` (protobuf text format of ``inference.ModelConfig``), read for what maps
to tierserve.

``parse_text_proto`` turns text format into plain data: a message is a dict, a field given more than
once (or with list syntax ``[a, b]``) is a list, enum values are their names. ``triton_settings``
maps a parsed configuration, or the same configuration as JSON (what a repository ``load`` request
carries in its ``config`` parameter), to ``config.yaml``'s settings:

==========================================  ==============================================
Triton                                      tierserve
==========================================  ==============================================
``name``                                    must equal the model's directory name
``platform``/``backend``                    ONNX Runtime only (others: logged, not honoured)
``max_batch_size``                          ``max_batch_size`` (0: no batching, as Triton)
``input``/``output`` (name, data_type,      the signature clients see, checked against the
dims, reshape)                              ONNX graph at load; ``reshape`` reshapes on the way
``output.label_filename``                   ``label_files`` (classification labels)
``dynamic_batching.max_queue_delay_microseconds``  ``max_queue_delay_ms``
``dynamic_batching.default_priority_level`` ``default_priority_level`` (a tier, as requests'
                                            ``priority`` levels are)
``dynamic_batching.priority_levels``        accepted: levels map to tiers
``dynamic_batching.default_queue_policy``   ``max_queue_size``; ``default_timeout_microseconds``
                                            is the timeout of requests that name none
``instance_group`` (count, kind)            ``instances`` (the CPU groups' counts, summed)
``version_policy``                          ``version_policy``
``response_cache.enable``                   the model's result cache opt-in
==========================================  ==============================================

Any other field, or a value tierserve cannot honour (a GPU instance group, ``preferred_batch_size``,
a ``DELAY`` timeout action...), is reported by name in ``TritonSettings.unhonoured``; the
repository logs each once per model. Text that does not parse raises ``InvalidInput`` with the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tierserve.datatypes import BY_NAME
from tierserve.errors import InvalidInput
from tierserve.repository.config import DeclaredTensor

# -- protobuf text format ----------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>\[\]:,;-])
    """,
    re.VERBOSE,
)
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    '"': '"',
    "'": "'",
    "\\": "\\",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}
_MAX_DEPTH = 64


@dataclass
class _Token:
    kind: str
    text: str
    line: int


def _tokens(text: str) -> Iterator[_Token]:
    position, line = 0, 1
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise InvalidInput(f"line {line}: unexpected character {text[position]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            yield _Token(kind, match.group(), line)
        line += match.group().count("\n")
        position = match.end()


def _unquote(token: _Token) -> str:
    body = token.text[1:-1]
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        code = body[index + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            index += 2
        elif code in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[index + 1 :])
            assert digits is not None
            out.append(chr(int(digits.group(), 8)))
            index += 1 + len(digits.group())
        elif code in "xX":
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[index + 2 :])
            if digits is None:
                raise InvalidInput(f"line {token.line}: bad \\x escape in a string")
            out.append(chr(int(digits.group(), 16)))
            index += 2 + len(digits.group())
        else:
            raise InvalidInput(f"line {token.line}: unknown escape \\{code} in a string")
    return "".join(out)


class _Parser:
    def __init__(self, text: str) -> None:
        self._tokens = list(_tokens(text))
        self._index = 0

    def _peek(self) -> _Token | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _next(self, what: str) -> _Token:
        token = self._peek()
        if token is None:
            last = self._tokens[-1].line if self._tokens else 1
            raise InvalidInput(f"line {last}: the text ends where {what} was expected")
        self._index += 1
        return token

    def _accept(self, text: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "punct" and token.text == text:
            self._index += 1
            return True
        return False

    def message(self, close: str | None, depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            raise InvalidInput(f"messages nest more than {_MAX_DEPTH} deep")
        fields: dict[str, Any] = {}
        repeated: set[str] = set()
        while True:
            token = self._peek()
            if token is None:
                if close is not None:
                    self._next(f"'{close}'")
                return fields
            if token.kind == "punct" and token.text == close:
                self._index += 1
                return fields
            name = self._next("a field name")
            if name.kind != "ident":
                raise InvalidInput(f"line {name.line}: expected a field name, got {name.text!r}")
            has_colon = self._accept(":")
            start = self._peek()
            if start is not None and start.kind == "punct" and start.text == "[":
                self._index += 1  # Triton writes message lists without the colon: ``input [ {...} ]``
                if name.text not in repeated:  # list syntax: repeated, even with one or no value
                    fields[name.text] = [fields[name.text]] if name.text in fields else []
                    repeated.add(name.text)
                fields[name.text].extend(self._list(depth))
            else:
                self._add(fields, repeated, name.text, self._value(has_colon, depth, name))
            while self._accept(",") or self._accept(";"):
                pass

    @staticmethod
    def _add(fields: dict[str, Any], repeated: set[str], name: str, value: Any) -> None:
        if name not in fields:
            fields[name] = value
        elif name in repeated:
            fields[name].append(value)
        else:
            fields[name] = [fields[name], value]
            repeated.add(name)

    def _list(self, depth: int) -> list[Any]:
        values: list[Any] = []
        if self._accept("]"):
            return values
        while True:
            values.append(self._value(True, depth, None))
            if self._accept("]"):
                return values
            token = self._next("',' or ']'")
            if token.text != ",":
                raise InvalidInput(f"line {token.line}: expected ',' or ']' in a list, got {token.text!r}")

    def _value(self, has_colon: bool, depth: int, name: _Token | None) -> Any:
        token = self._next("a value")
        if token.kind == "punct" and token.text in "{<":
            return self.message("}" if token.text == "{" else ">", depth + 1)
        if not has_colon and name is not None:
            raise InvalidInput(f"line {token.line}: expected ':' or '{{' after '{name.text}'")
        if token.kind == "string":
            parts = [_unquote(token)]
            while (following := self._peek()) is not None and following.kind == "string":
                parts.append(_unquote(self._next("a string")))
            return "".join(parts)
        if token.kind == "punct" and token.text == "-":  # -inf, -nan
            following = self._next("a number")
            return -_number(following) if following.kind == "number" else -_special(following)
        if token.kind == "number":
            return _number(token)
        if token.kind == "ident":
            if token.text in ("true", "True", "t"):
                return True
            if token.text in ("false", "False", "f"):
                return False
            if token.text.lower() in ("inf", "infinity", "nan"):
                return _special(token)
            return token.text  # an enum value, by name
        raise InvalidInput(f"line {token.line}: unexpected {token.text!r}")


def _number(token: _Token) -> int | float:
    text = token.text.rstrip("fF") if not token.text.lower().startswith(("0x", "-0x", "+0x")) else token.text
    try:
        if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", text):
            return int(text, 16)
        if re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        return float(text)
    except ValueError:
        raise InvalidInput(f"line {token.line}: {token.text!r} is not a number") from None


def _special(token: _Token) -> float:
    if token.kind != "ident" or token.text.lower() not in ("inf", "infinity", "nan"):
        raise InvalidInput(f"line {token.line}: expected a number after '-', got {token.text!r}")
    return float(token.text)


def parse_text_proto(text: str) -> dict[str, Any]:
    """Protobuf text format as plain data. Example::

    parse_text_proto('max_batch_size: 8 input [{ name: "x" dims: [16] }]')
    == {"max_batch_size": 8, "input": [{"name": "x", "dims": [16]}]}
    """
    return _Parser(text).message(None, 0)


# -- ModelConfig -> tierserve settings ------------------------------------------------------------


@dataclass
class TritonSettings:
    settings: dict[str, Any] = field(default_factory=dict)  # config.yaml's vocabulary
    inputs: tuple[DeclaredTensor, ...] = ()
    outputs: tuple[DeclaredTensor, ...] = ()
    unhonoured: list[str] = field(default_factory=list)  # field names (dotted), each once


_ONNX_PLATFORMS = {"onnxruntime_onnx", "onnxruntime"}
_TOP_LEVEL_HONOURED = {
    "name",
    "platform",
    "backend",
    "max_batch_size",
    "input",
    "output",
    "dynamic_batching",
    "instance_group",
    "version_policy",
    "response_cache",
}


def triton_settings(config: Mapping[str, Any], model: str, *, source: str) -> TritonSettings:
    """Map Triton's ModelConfig (parsed text format, or its JSON form) onto tierserve's settings."""
    result = TritonSettings()
    unhonoured = result.unhonoured
    for key in config:
        if key not in _TOP_LEVEL_HONOURED:
            unhonoured.append(key)
    name = config.get("name")
    if name not in (None, "", model):
        raise InvalidInput(f"{source}: name '{name}' does not match the model's directory '{model}'")
    for key in ("platform", "backend"):
        value = config.get(key)
        if value not in (None, "") and value not in _ONNX_PLATFORMS:
            unhonoured.append(f"{key} ({value}: tierserve serves <version>/model.onnx with ONNX Runtime)")
    settings = result.settings
    if "max_batch_size" in config:
        settings["max_batch_size"] = _integer(config["max_batch_size"], "max_batch_size", source)
    elif "input" in config or "output" in config:
        settings["max_batch_size"] = 0  # protobuf's default: the declared dims are whole shapes
    result.inputs = tuple(_tensor(raw, "input", source, unhonoured) for raw in _repeated(config.get("input")))
    result.outputs = tuple(
        _tensor(raw, "output", source, unhonoured) for raw in _repeated(config.get("output"))
    )
    labels = {
        raw["name"]: raw["label_filename"]
        for raw in _repeated(config.get("output"))
        if isinstance(raw, Mapping) and raw.get("label_filename")
    }
    if labels:
        settings["label_files"] = labels
    if "dynamic_batching" in config:
        _dynamic_batching(
            _message(config["dynamic_batching"], "dynamic_batching", source), settings, source, unhonoured
        )
    if "instance_group" in config:
        _instance_groups(config["instance_group"], settings, source, unhonoured)
    if "version_policy" in config:
        settings["version_policy"] = _version_policy(config["version_policy"], source)
    if "response_cache" in config:
        cache = _message(config["response_cache"], "response_cache", source)
        settings["response_cache"] = bool(cache.get("enable", False))
    return result


def _repeated(value: object) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _message(value: object, what: str, source: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{source}: {what} must be a message")
    return value


def _integer(value: object, what: str, source: str, *, minimum: int = 0) -> int:
    # Protobuf's JSON form writes 64-bit integers as strings.
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{source}: {what} must be an integer >= {minimum}, got {value!r}")
    return value


def _datatype(value: object, what: str, source: str) -> str:
    if not isinstance(value, str) or not value.startswith("TYPE_"):
        raise InvalidInput(f"{source}: {what} must be a TYPE_... data type, got {value!r}")
    name = "BYTES" if value == "TYPE_STRING" else value.removeprefix("TYPE_")
    if name not in BY_NAME:
        raise InvalidInput(f"{source}: {what}: data type {value} is not supported by tierserve")
    return name


def _tensor(raw: object, kind: str, source: str, unhonoured: list[str]) -> DeclaredTensor:
    entry = _message(raw, kind, source)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{source}: every {kind} needs a name")
    what = f"{kind} '{name}'"
    # Triton completes a partial declaration from the model: what is left out, the graph says here.
    dims = None
    if "dims" in entry:
        dims = tuple(_integer(d, f"{what} dims", source, minimum=-1) for d in _repeated(entry["dims"]))
    datatype = _datatype(entry["data_type"], f"{what} data_type", source) if "data_type" in entry else None
    reshape = None
    if "reshape" in entry:
        if dims is None:
            raise InvalidInput(f"{source}: {what} has a reshape but no dims")
        shape = _message(entry["reshape"], f"{what} reshape", source).get("shape")
        reshape = tuple(_integer(d, f"{what} reshape", source, minimum=-1) for d in _repeated(shape))
    for key in entry:
        if key not in ("name", "data_type", "dims", "reshape", "label_filename"):
            value = entry[key]
            if value not in (False, 0, "", "FORMAT_NONE", None):  # defaults are no request at all
                unhonoured.append(f"{kind}.{key}")
    return DeclaredTensor(name, datatype, dims, reshape)


def _dynamic_batching(
    batching: Mapping[str, Any], settings: dict[str, Any], source: str, unhonoured: list[str]
) -> None:
    for key in batching:
        if key not in (
            "max_queue_delay_microseconds",
            "priority_levels",
            "default_priority_level",
            "default_queue_policy",
        ):
            unhonoured.append(f"dynamic_batching.{key}")
    if "max_queue_delay_microseconds" in batching:
        delay_us = _integer(batching["max_queue_delay_microseconds"], "max_queue_delay_microseconds", source)
        settings["max_queue_delay_ms"] = delay_us / 1000
    if "default_priority_level" in batching:
        level = _integer(batching["default_priority_level"], "default_priority_level", source)
        if level:
            settings["default_priority_level"] = level
    if "default_queue_policy" in batching:
        policy = _message(batching["default_queue_policy"], "default_queue_policy", source)
        for key, value in policy.items():
            if key == "max_queue_size":
                size = _integer(value, "max_queue_size", source)
                if size:  # 0 is Triton's "unbounded": tierserve keeps its own bound
                    settings["max_queue_size"] = size
            elif key == "default_timeout_microseconds":
                timeout_us = _integer(value, "default_timeout_microseconds", source)
                if timeout_us:
                    settings["default_timeout_us"] = timeout_us
            elif (key, value) not in (("timeout_action", "REJECT"), ("allow_timeout_override", True)):
                unhonoured.append(f"dynamic_batching.default_queue_policy.{key}")


def _instance_groups(raw: object, settings: dict[str, Any], source: str, unhonoured: list[str]) -> None:
    cpu_instances = 0
    for group in _repeated(raw):
        entry = _message(group, "instance_group", source)
        kind = entry.get("kind", "KIND_AUTO")
        count = _integer(entry.get("count", 1), "instance_group count", source, minimum=1)
        if kind in ("KIND_CPU", "KIND_AUTO"):
            cpu_instances += count
        else:
            unhonoured.append(f"instance_group.kind ({kind}: GPU placement follows tierserve's pools)")
        for key in entry:
            if key not in ("name", "kind", "count"):
                unhonoured.append(f"instance_group.{key}")
    if cpu_instances:
        settings["instances"] = cpu_instances


def _version_policy(raw: object, source: str) -> object:
    policy = _message(raw, "version_policy", source)
    if len(policy) != 1:
        raise InvalidInput(f"{source}: version_policy must be one of latest, all, specific")
    ((kind, value),) = policy.items()
    body = _message(value, f"version_policy.{kind}", source)
    if kind == "all":
        return "all"
    if kind == "latest":
        return {"latest": _integer(body.get("num_versions", 1), "num_versions", source, minimum=1)}
    if kind == "specific":
        return {
            "specific": [_integer(v, "versions", source, minimum=1) for v in _repeated(body.get("versions"))]
        }
    raise InvalidInput(f"{source}: version_policy must be one of latest, all, specific, got {kind}")
