"""Structured-output checks: the JSON schemas a chat request asks its answer to follow, and whether a
non-streamed answer does (the `schemaMismatch` escalation of a policy's `escalateOn`).

A request asks for structured output with `response_format` of type `json_schema` (the message content
must be JSON matching `json_schema.schema`) or with function tools (each tool call's `arguments` must be
JSON matching its function's `parameters`). The schemas are the client's, so hostile input:

- bounded: at most `MAX_SCHEMA_BYTES` of JSON and `MAX_SCHEMA_DEPTH` levels of nesting each;
- no network: a `$ref` (or `$dynamicRef`) must point into the schema itself (`#...`); the validator's
  registry refuses to retrieve anything, so a `$id` cannot make a local-looking reference remote either;
- linear-time patterns: `pattern` and `patternProperties` are matched with RE2, never Python's
  backtracking `re` (a pattern RE2 cannot compile is refused);
- time-boxed: every keyword checks a deadline (`CHECK_SECONDS` per answer), so references that fan out
  exponentially end in `timeout` (the answer then stands, unchecked), never in a stalled event loop. The
  keywords whose one call grows with the answer (`uniqueItems`, `enum`, `additionalProperties`,
  `unevaluatedItems`, `unevaluatedProperties`) are our own linear versions that read the deadline every
  `_TICK` values they touch: jsonschema's compare items pairwise, so an answer of 200k array items
  under `uniqueItems` held the loop for minutes inside one keyword (`const` costs at most the const's
  size). An answer nested too deep to walk stands unchecked the same way; no error message repeats the
  answer (jsonschema's put its whole repr in them);
- jsonschema matches `unevaluatedProperties`' pattern properties with Python's `re`, so a schema with
  both `unevaluatedProperties` and `patternProperties` is refused (OpenAI's structured outputs support
  neither), and `additionalProperties` runs on RE2 like `patternProperties`.

A schema that breaks a bound or is not a valid JSON Schema (draft 2020-12) is a `SchemaProblemError` naming
the field: the client's 400, before any upstream call. jsonschema is imported on the first request that asks
for structured output under a policy that checks it; no other request pays for it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

MAX_SCHEMA_BYTES = 64 * 1024
"""Largest schema accepted, as compact JSON (OpenAI's own structured outputs cap theirs lower)."""
MAX_SCHEMA_DEPTH = 32
"""Deepest nesting of objects and arrays in one schema."""
CHECK_SECONDS = 0.05
"""Time one answer's validation may take; past it the answer stands unchecked (`timeout`)."""
REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


class SchemaProblemError(ValueError):
    """A client's schema that cannot be checked: `field` names it in the request body."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class _TimeoutError(Exception):
    """The validation deadline passed."""


@dataclass(frozen=True, slots=True)
class Expected:
    """What a request's answer must look like."""

    content: Any = None
    """The validator of the message content (`response_format` json_schema), or None."""
    tools: Mapping[str, Any] | None = None
    """Validators of tool-call arguments by function name (None: no function tool declared)."""


def expected_output(body: Mapping[str, Any]) -> Expected | None:
    """The schemas a chat request asks for, compiled; None when it asks for no structured output.
    Raises SchemaProblemError when a schema is unusable."""
    content = None
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        field = "response_format.json_schema.schema"
        if not isinstance(spec, Mapping) or "schema" not in spec:
            raise SchemaProblemError(field, "missing: a json_schema response format needs a schema")
        content = compile_schema(spec["schema"], field)
    tools: dict[str, Any] | None = None
    declared = body.get("tools")
    if isinstance(declared, list):
        for n, tool in enumerate(declared):
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
                continue  # not a function tool: the upstream judges it
            tools = tools if tools is not None else {}
            parameters = function.get("parameters")
            field = f"tools[{n}].function.parameters"
            tools[function["name"]] = None if parameters is None else compile_schema(parameters, field)
    if content is None and tools is None:
        return None
    return Expected(content, tools)


def compile_schema(schema: Any, field: str) -> Any:
    """A validator for one client schema (cached by its canonical JSON); SchemaProblemError when unusable."""
    if not isinstance(schema, Mapping | bool):
        raise SchemaProblemError(field, "must be a JSON Schema object")
    _check_shape(schema, field)
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SchemaProblemError(field, f"not encodable as JSON ({exc})") from None
    if len(key) > MAX_SCHEMA_BYTES:
        raise SchemaProblemError(field, f"{len(key)} bytes of JSON, more than the {MAX_SCHEMA_BYTES} allowed")
    return _compiled(key, field)


def _check_shape(schema: Any, field: str) -> None:
    """Depth, references and patterns, walked iteratively (a deep schema cannot exhaust the stack)."""
    import re2

    from .engine.detectors import compile_pattern

    stack: list[tuple[Any, str, int]] = [(schema, field, 1)]
    unevaluated = patterned = ""
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaProblemError(where, f"nested deeper than {MAX_SCHEMA_DEPTH} levels")
        if isinstance(node, Mapping):
            for key, value in node.items():
                here = f"{where}.{key}"
                if key == "unevaluatedProperties":
                    unevaluated = unevaluated or here
                elif key == "patternProperties":
                    patterned = patterned or here
                if key in REF_KEYWORDS and isinstance(value, str) and not value.startswith("#"):
                    raise SchemaProblemError(
                        here, f"{value!r} is not a local reference (only '#...' is resolved)"
                    )
                patterns = [value] if key == "pattern" and isinstance(value, str) else []
                if key == "patternProperties" and isinstance(value, Mapping):
                    patterns = [p for p in value if isinstance(p, str)]
                for pattern in patterns:
                    try:
                        compile_pattern(pattern)
                    except re2.error:
                        raise SchemaProblemError(here, f"{pattern[:80]!r} is not an RE2 pattern") from None
                if isinstance(value, Mapping | list):
                    stack.append((value, here, depth + 1))
        elif isinstance(node, list):
            for n, item in enumerate(node):
                if isinstance(item, Mapping | list):
                    stack.append((item, f"{where}[{n}]", depth + 1))
    if unevaluated and patterned:
        raise SchemaProblemError(
            unevaluated, f"cannot be checked in a schema with patternProperties ({patterned}): not on RE2"
        )


@functools.lru_cache(maxsize=256)
def _compiled(key: bytes, field: str) -> Any:
    """A checked schema's validator: clients send the same schema again and again, it compiles once."""
    from jsonschema import exceptions

    validator_class = _validator_class()
    schema = orjson.loads(key)
    try:
        validator_class.check_schema(schema)
    except exceptions.SchemaError as exc:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        raise SchemaProblemError(f"{field}{path}", f"not a valid JSON Schema: {exc.message[:200]}") from None
    return validator_class(schema, registry=_registry())


@functools.cache
def _registry() -> Any:
    from referencing import Registry
    from referencing.exceptions import NoSuchResource

    def refuse(uri: str) -> Any:  # no network, no files: only the schema itself is resolved
        raise NoSuchResource(uri)

    return Registry(retrieve=refuse)  # type: ignore[call-arg]  # an attrs alias mypy does not see


_deadline = [0.0]
"""The running check's deadline (validation is synchronous on the loop's thread: one at a time)."""


_TICK = 1024
"""Values a long keyword touches between two reads of the clock."""


def _tick(n: int) -> None:
    """Raise when the deadline passed, looking at the clock every `_TICK` calls."""
    if not n % _TICK and time.monotonic() > _deadline[0]:
        raise _TimeoutError


_BOOL, _ARRAY, _OBJECT = object(), object(), object()


def _equality_key(value: Any, counter: list[int]) -> Any:
    """A hashable key equal for JSON values JSON Schema calls equal: `1` and `1.0` are one number, `true`
    is not `1`, object keys are unordered. Built in one pass (counted in `counter` for `_tick`), so
    `uniqueItems` is a set lookup per item instead of jsonschema's pairwise comparison."""
    counter[0] += 1
    _tick(counter[0])
    if value is True or value is False:
        return (_BOOL, value)
    if isinstance(value, list):
        return (_ARRAY, tuple(_equality_key(item, counter) for item in value))
    if isinstance(value, dict):
        return (_OBJECT, frozenset((name, _equality_key(item, counter)) for name, item in value.items()))
    return value  # str, int, float, None: Python's equality (and hash) is JSON Schema's


_MEMBER_KEYS: dict[int, tuple[Any, frozenset[Any]]] = {}


def _member_keys(members: Any) -> frozenset[Any]:
    """An `enum`'s values as a set of equality keys, kept per schema list (schemas are cached too)."""
    held = _MEMBER_KEYS.get(id(members))
    if held is not None and held[0] is members:
        return held[1]
    keys = frozenset(_equality_key(member, [0]) for member in members)
    if len(_MEMBER_KEYS) >= 1024:
        _MEMBER_KEYS.clear()
    _MEMBER_KEYS[id(members)] = (members, keys)
    return keys


@functools.cache
def _validator_class() -> Any:
    """Draft 2020-12 with RE2 patterns and a deadline check in every keyword."""
    from jsonschema import Draft202012Validator, ValidationError, _utils, validators

    from .engine.detectors import compile_pattern

    def pattern(validator: Any, value: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not compile_pattern(value).search(instance):
            yield ValidationError(f"does not match pattern {value[:80]!r}")

    def pattern_properties(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        for regex, subschema in value.items():
            compiled = compile_pattern(regex)
            for name, item in instance.items():
                if compiled.search(name):
                    yield from validator.descend(item, subschema, path=name, schema_path=regex)

    def additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        properties = schema.get("properties", {})
        patterns = [compile_pattern(regex) for regex in schema.get("patternProperties", {})]
        extras = []
        for n, name in enumerate(instance):
            _tick(n)
            if name not in properties and not any(p.search(name) for p in patterns):
                extras.append(name)
        if validator.is_type(allowed, "object"):
            for name in extras:
                yield from validator.descend(instance[name], allowed, path=name)
        elif not allowed and extras:
            yield ValidationError(f"{len(extras)} properties not allowed, the first {extras[0][:80]!r}")

    def unevaluated_items(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "array"):
            return
        evaluated = set(_utils.find_evaluated_item_indexes_by_schema(validator, instance, schema))
        for n in range(len(instance)):
            _tick(n)
            if n not in evaluated:
                yield ValidationError(f"item {n} is not evaluated (unevaluatedItems)")
                return

    def unevaluated_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        evaluated = set(_utils.find_evaluated_property_keys_by_schema(validator, instance, schema))
        for n, name in enumerate(instance):
            _tick(n)
            if name not in evaluated:
                for _error in validator.descend(instance[name], allowed, path=name, schema_path=name):
                    yield ValidationError(f"property {name[:80]!r} is unevaluated and invalid")
                    return

    def unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not unique or not validator.is_type(instance, "array"):
            return
        seen: set[Any] = set()
        counter = [0]
        for item in instance:
            key = _equality_key(item, counter)
            if key in seen:
                yield ValidationError("has non-unique elements")
                return
            seen.add(key)

    def enum(validator: Any, members: Any, instance: Any, schema: Any) -> Iterator[Any]:
        # one set lookup, not a comparison per member (an enum of 64 KiB has thousands)
        if _equality_key(instance, [0]) not in _member_keys(members):
            yield ValidationError("is not one of the enum's values")

    def const(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        # jsonschema's comparison stops at the first difference in length or key set: it costs at most
        # the const's own size (a bounded schema), however big the answer; only its message is ours
        if not _utils.equal(instance, value):
            yield ValidationError("is not the const value")

    def timed(check: Any) -> Any:
        def run(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
            if time.monotonic() > _deadline[0]:
                raise _TimeoutError
            return iter(check(validator, value, instance, schema) or ())

        return run

    keywords = {
        **Draft202012Validator.VALIDATORS,
        "pattern": pattern,
        "patternProperties": pattern_properties,
        "additionalProperties": additional_properties,
        "unevaluatedItems": unevaluated_items,
        "unevaluatedProperties": unevaluated_properties,
        "uniqueItems": unique_items,
        "enum": enum,
        "const": const,
    }
    return validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator, {k: timed(v) for k, v in keywords.items()}
    )


def check_answer(parsed: Mapping[str, Any], expected: Expected) -> str:
    """`ok`, `mismatch` (some choice's content or tool call does not follow its schema) or `timeout`.

    A refusal (`message.refusal`) stands: the model declined, it did not answer wrongly."""
    _deadline[0] = time.monotonic() + CHECK_SECONDS
    try:
        choices = parsed.get("choices") or [{}]
        if not isinstance(choices, list):
            return "mismatch"  # an upstream's odd JSON is a wrong answer, not our crash
        for choice in choices:
            message = choice.get("message") if isinstance(choice, Mapping) else None
            if not isinstance(message, Mapping):
                return "mismatch"
            if not _message_follows(message, expected):
                return "mismatch"
    except (_TimeoutError, RecursionError):  # out of time, or too deep to walk: unchecked, not wrong
        return "timeout"
    return "ok"


def _message_follows(message: Mapping[str, Any], expected: Expected) -> bool:
    if message.get("refusal"):
        return True
    calls = message.get("tool_calls")
    if calls:
        if expected.tools is None:
            return True  # tool calls the request declared no schema for: nothing to check
        for call in calls if isinstance(calls, list) else [None]:
            function = call.get("function") if isinstance(call, Mapping) else None
            name = function.get("name") if isinstance(function, Mapping) else None
            if not isinstance(function, Mapping) or not isinstance(name, str) or name not in expected.tools:
                return False
            validator = expected.tools[name]
            if validator is not None and not _follows(validator, function.get("arguments")):
                return False
        return True
    if expected.content is not None:
        return _follows(expected.content, message.get("content"))
    return True


def _follows(validator: Any, text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        instance = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    for _error in validator.iter_errors(instance):
        return False
    return True
