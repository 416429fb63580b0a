"""Every JSON body the API takes is checked against its request schema in the OpenAPI document
(``views/openapi.py``, the one source of truth) before a view sees it.

A body of the wrong shape is a 400: not JSON, not an object, an unknown field, a missing one (or
null where a value is required), a wrong type. A value of the right type that cannot be taken is
a 422, like every other refusal of what cannot be accepted: too long, too many, out of range,
not one of the choices. Each names the field at fault (the body's member; the message gives the
whole path to a nested value) and says what is wrong in plain words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from flask import request
from jsonschema import Draft202012Validator, TypeChecker, validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from werkzeug.exceptions import BadRequest as WerkzeugBadRequest

from cbserver.errors import BadRequest, CbError, Invalid
from cbserver.i18n import _

_RULE_VARIABLE = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")
_SHAPE = frozenset({"type", "required", "additionalProperties"})


def _is_whole_number(checker: TypeChecker, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


# JSON Schema counts 3.0 as an integer; the services take a whole number only as a Python int.
_BodyValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_whole_number),
)


@dataclass(frozen=True)
class RequestBody:
    validator: Validator
    # Whether the operation needs a body at all (PUT .../agents/<agent> may come without one).
    needed: bool
    # The members the body must have: null for one of them is a missing value, not a type.
    required: frozenset[str]


@cache
def request_bodies() -> dict[tuple[str, str], RequestBody]:
    """(OpenAPI path, method) -> what the operation's JSON body must be."""
    from cbserver.views.openapi import document  # it imports the views that import this

    spec = document()
    schemas = spec["components"]["schemas"]
    bodies: dict[tuple[str, str], RequestBody] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody")
            if body is None:
                continue
            schema = body["content"]["application/json"]["schema"]
            # The components ride along, so that "#/components/schemas/..." resolves in place.
            rooted = {**schema, "components": spec["components"]}
            named = schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema
            bodies[(path, method)] = RequestBody(
                _BodyValidator(rooted),
                needed=bool(body.get("required")),
                required=frozenset(named.get("required", ())),
            )
    return bodies


def check_json_body() -> None:
    """Before a view: refuse (CbError) a body its operation's schema does not allow."""
    rule = request.url_rule
    if rule is None:
        return
    path = _RULE_VARIABLE.sub(r"{\1}", rule.rule)
    body = request_bodies().get((path, request.method.lower()))
    if body is None or (not body.needed and not request.get_data(cache=True)):
        return
    problem = _first_problem(body.validator.iter_errors(_parsed_json()))
    if problem is not None:
        raise _refusal(problem, body.required)


def _parsed_json() -> dict[str, Any]:
    if not request.is_json:
        raise BadRequest(
            _("Send the request as JSON (Content-Type: application/json)."), code="not_json"
        )
    try:
        body = request.get_json()
    except (WerkzeugBadRequest, RecursionError) as exc:
        # Nested deeper than the parser goes is no JSON we could take either.
        raise BadRequest(_("The body is not valid JSON."), code="bad_json") from exc
    if not isinstance(body, dict):
        raise BadRequest(_("The body must be a JSON object."), code="bad_json")
    return body


def _leaves(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    """The errors, each "matches none of these" replaced by the error of the choice that came
    closest: the one that went deepest (a ``null`` choice fails at once, an object's further in)."""
    for error in errors:
        if error.validator in ("anyOf", "oneOf") and error.context:
            yield from _leaves([max(error.context, key=lambda e: len(e.relative_path))])
        else:
            yield error


def _first_problem(errors: Iterable[ValidationError]) -> ValidationError | None:
    """The first shape problem, else the first value problem, in the schema's order."""
    found = list(_leaves(errors))
    shape = [error for error in found if _is_shape(error)]
    return next(iter(shape or found), None)


def _is_shape(error: ValidationError) -> bool:
    # Consent withheld is the visitor's answer, not a malformed body: a malformed one says so.
    if _consent_withheld(
        str(error.validator), list(error.absolute_path), error.instance, error.validator_value
    ):
        return False
    return error.validator in _SHAPE or (
        error.validator == "minLength" and error.validator_value == 1
    )


def _where(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _refusal(error: ValidationError, required: frozenset[str]) -> CbError:
    path = list(error.absolute_path)
    field = str(path[0]) if path else None
    where = _where(path)
    keyword = str(error.validator)
    limit: Any = error.validator_value
    instance: Any = error.instance
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if _consent_withheld(keyword, path, instance, limit):
        return Invalid(
            _("Please tick the box to agree that we call you at this number."),
            field="consent",
            code="consent_missing",
        )
    if keyword == "additionalProperties":
        unknown = sorted(set(instance) - set(schema.get("properties", {})))[:1]
        return BadRequest(
            _("Unknown field: %(field)s.", field=_where([*path, *unknown])),
            field=field or next(iter(unknown), None),
            code="unknown_field",
        )
    if keyword == "required":
        missing = [name for name in limit if name not in instance][:1]
        return _missing(_where([*path, *missing]), field or next(iter(missing), None))
    if (keyword == "minLength" and limit == 1) or (
        keyword == "type" and instance is None and len(path) == 1 and field in required
    ):
        return _missing(where, field)
    if keyword == "type":
        what = _type_words(schema.get("type", []))
        return BadRequest(
            _("The field %(field)s must be %(what)s.", field=where, what=what),
            field=field,
            code="wrong_type",
        )
    if keyword == "maxLength":
        message = _(
            "The field %(field)s is too long: at most %(limit)s characters.",
            field=where,
            limit=limit,
        )
        return Invalid(message, field=field, code="too_long")
    if keyword in ("maxItems", "maxProperties"):
        message = _(
            "The field %(field)s has too many entries: at most %(limit)s.", field=where, limit=limit
        )
        return Invalid(message, field=field, code="too_many")
    return Invalid(_value_message(keyword, where, instance, schema), field=field)


def _consent_withheld(keyword: str, path: list[Any], instance: Any, limit: Any) -> bool:
    """A request's consent left out, null or false: refused as the intake service refuses it
    (a 422 the visitor understands), not as a malformed body."""
    if keyword == "required":
        return not path and [name for name in limit if name not in instance][:1] == ["consent"]
    return path == ["consent"] and (keyword == "const" or instance is None)


def _missing(where: str, field: str | None) -> BadRequest:
    return BadRequest(
        _("The field %(field)s is required.", field=where), field=field, code="missing_field"
    )


def _type_words(kinds: str | list[str]) -> str:
    words = {
        "string": _("text"),
        "integer": _("a whole number"),
        "number": _("a number"),
        "boolean": _("true or false"),
        "array": _("a list"),
        "object": _("an object"),
    }
    listed = [kinds] if isinstance(kinds, str) else kinds
    return _(" or ").join(words[kind] for kind in listed if kind in words)


def _value_message(keyword: str, where: str, value: object, schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if keyword in ("minimum", "maximum") and low is not None and high is not None:
        kinds = schema.get("type")
        if kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds):
            return _(
                "The field %(field)s must be a whole number from %(low)s to %(high)s.",
                field=where,
                low=low,
                high=high,
            )
        return _(
            "The field %(field)s must be a number from %(low)s to %(high)s.",
            field=where,
            low=low,
            high=high,
        )
    if keyword == "minimum":
        return _("The field %(field)s must be at least %(low)s.", field=where, low=low)
    if keyword == "maximum":
        return _("The field %(field)s must be at most %(high)s.", field=where, high=high)
    if keyword == "minLength":
        return _(
            "The field %(field)s is too short: at least %(limit)s characters.",
            field=where,
            limit=schema["minLength"],
        )
    if keyword == "enum":
        choices = ", ".join(str(choice) for choice in schema["enum"] if choice is not None)
        return _("The field %(field)s must be one of %(choices)s.", field=where, choices=choices)
    if keyword == "pattern" and schema.get("description"):
        # A pattern's description says what the value must be: "an opening like 09:00-17:30".
        return _(
            "%(field)s: %(value)s is not %(expected)s.",
            field=where,
            value=repr(value),
            expected=schema["description"],
        )
    return _("The field %(field)s is not valid.", field=where)
