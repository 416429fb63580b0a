"""``/api/v1/openapi.json``: the OpenAPI 3 document of the JSON API (schemathesis checks it)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from cbserver import bots, captcha, number_policy, subscribers
from cbserver.agents import DTMF_MODES
from cbserver.hours import MAX_EXCEPTIONS, MAX_INTERVALS_PER_DAY, WEEKDAYS
from cbserver.intake import MAX_IDEMPOTENCY_KEY, MAX_NAME, MAX_PAGE_URL, MAX_TOPIC
from cbserver.models import RequestStatus
from cbserver.retries import LIMITS, OUTCOME_KINDS
from cbserver.routing import INACTIVE, AgentState
from cbserver.views import admin, api

blueprint = Blueprint("openapi", __name__)

STATUSES = [status.value for status in RequestStatus]


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_TEXT = {"type": "string"}
_NULLABLE_TEXT = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "stable, for programs"},
                    "message": {"type": "string", "description": "plain words, for people"},
                    "field": {"type": "string", "description": "the input at fault"},
                    "next_free": {
                        "type": "array",
                        "items": _TIME,
                        "description": "slot_full: the next slots with a free place",
                    },
                    "opens_at": {
                        **_TIME,
                        "description": "closed: when the business next opens",
                    },
                },
            }
        },
    },
    "CallbackCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["subscriber", "phone", "consent"],
        "properties": {
            "subscriber": {
                "type": "string",
                "minLength": 1,
                "description": "the business's slug",
                "example": "acme",
            },
            "phone": {
                "type": "string",
                "minLength": 1,
                "description": "E.164, or national in the business's country",
                "example": "+12015550123",
            },
            "name": {"type": ["string", "null"], "maxLength": MAX_NAME},
            "topic": {"type": ["string", "null"], "maxLength": MAX_TOPIC},
            "when": {
                "type": ["string", "null"],
                "description": '"asap", or an ISO 8601 time with a zone inside a bookable slot '
                "(see /api/v1/subscribers/{slug}/slots), within the booking window",
                "example": "asap",
            },
            "page_url": {"type": ["string", "null"], "maxLength": MAX_PAGE_URL},
            "consent": {
                "type": "boolean",
                "const": True,
                "description": "the visitor agrees to be called at this number: must be true",
            },
            "captcha": {
                "type": ["string", "null"],
                "maxLength": captcha.MAX_ANSWER,
                "description": "the answer of the business's CAPTCHA, when it has one",
            },
            "form_token": {
                "type": ["string", "null"],
                "description": "the widget's token of when its form was shown "
                "(/widget/{slug}/form-token.json), good for one request: required from a "
                "browser (a request with an Origin header)",
            },
            bots.HONEYPOT_FIELD: {
                "type": ["string", "null"],
                "description": "leave it out or empty: only bots fill it in",
            },
        },
    },
    "CallbackCreated": {
        "type": "object",
        "required": ["id", "status", "token", "status_url"],
        "properties": {
            "id": _TEXT,
            "status": {"type": "string", "enum": STATUSES},
            "token": {"type": "string", "description": "the visitor's secret for this request"},
            "status_url": {"type": "string", "format": "uri"},
            "due_at": {"type": "string", "format": "date-time"},
            "when_text": {
                "type": "string",
                "description": "when the visitor will be called, in the business's language "
                "and local time",
            },
        },
    },
    "Callback": {
        "type": "object",
        "required": ["id", "status", "status_text", "subscriber", "phone", "events", "attempts"],
        "properties": {
            "id": _TEXT,
            "status": {"type": "string", "enum": STATUSES},
            "status_text": _TEXT,
            "subscriber": {
                "type": "object",
                "required": ["slug", "name"],
                "properties": {"slug": _TEXT, "name": _TEXT},
            },
            "phone": _TEXT,
            "phone_display": _TEXT,
            "name": _NULLABLE_TEXT,
            "topic": _NULLABLE_TEXT,
            "requested_time": _NULLABLE_TIME,
            "slot_start": {
                **_NULLABLE_TIME,
                "description": "the start of the booked slot; null: as soon as possible",
            },
            "due_at": _TIME,
            "due_text": _TEXT,
            "deadline_at": {
                **_NULLABLE_TIME,
                "description": "not called by then, the request expires",
            },
            "position": {"type": ["integer", "null"], "minimum": 1},
            "estimated_call_at": _NULLABLE_TIME,
            "estimated_call_text": _NULLABLE_TEXT,
            "can_cancel": {"type": "boolean"},
            "can_reschedule": {
                "type": "boolean",
                "description": "nobody has started calling yet: it may be moved",
            },
            "created_at": _TIME,
            "updated_at": _TIME,
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["at", "to", "reason"],
                    "properties": {
                        "at": _TIME,
                        "at_text": _TEXT,
                        "from": {"type": ["string", "null"]},
                        "to": {"type": "string", "enum": STATUSES},
                        "reason": _TEXT,
                    },
                },
            },
            "attempts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "number": {"type": "integer"},
                        "started_at": _TIME,
                        "answered_at": _NULLABLE_TIME,
                        "ended_at": _NULLABLE_TIME,
                        "outcome": _NULLABLE_TEXT,
                        "hangup_cause": {"type": ["integer", "null"]},
                        "hangup_cause_text": _NULLABLE_TEXT,
                    },
                },
            },
        },
    },
    "CallbackReschedule": {
        "type": "object",
        "additionalProperties": False,
        "required": ["when"],
        "properties": {
            "when": {
                "type": "string",
                "minLength": 1,
                "description": '"asap", or the start of a bookable slot (ISO 8601 with a zone)',
                "example": "asap",
            }
        },
    },
    "SlotList": {
        "type": "object",
        "required": [
            "subscriber",
            "time_zone",
            "slot_minutes",
            "open_now",
            "next_opening",
            "next_opening_text",
            "outside_hours",
            "slots",
        ],
        "properties": {
            "subscriber": {"type": "string", "description": "the business's slug"},
            "time_zone": {"type": "string", "description": "IANA: the zone of the *_text times"},
            "slot_minutes": {"type": "integer"},
            "open_now": {"type": "boolean"},
            "next_opening": {
                **_NULLABLE_TIME,
                "description": "now when open; null when not opening within a year",
            },
            "next_opening_text": _NULLABLE_TEXT,
            "outside_hours": {
                "type": "string",
                "enum": list(subscribers.OUTSIDE_HOURS),
                "description": 'what "asap" becomes while closed: scheduled for the opening, '
                "or refused",
            },
            "slots": {
                "type": "array",
                "description": "in order; slots that have ended are left out",
                "items": {
                    "type": "object",
                    "required": ["start", "end", "start_text", "capacity", "remaining"],
                    "properties": {
                        "start": _TIME,
                        "end": _TIME,
                        "start_text": {
                            "type": "string",
                            "description": "the start in the business's time zone",
                        },
                        "capacity": {"type": "integer", "minimum": 0},
                        "remaining": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "0: full, not bookable",
                        },
                    },
                },
            },
        },
    },
}

_REQUEST_ID = {"name": "request_id", "in": "path", "required": True, "schema": _TEXT}
_TOKEN_QUERY = {
    "name": "token",
    "in": "query",
    "required": False,
    "description": "the visitor token, when not sent as a bearer token",
    "schema": _TEXT,
}
_VISITOR: list[dict[str, list[str]]] = [{"visitorToken": []}, {}]

PATHS: dict[str, Any] = {
    "/api/v1/callbacks": {
        "post": {
            "operationId": "createCallback",
            "summary": "Ask for a call-back",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "a repeat with the same key returns the same request",
                    "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/CallbackCreate"}}
                },
            },
            "responses": {
                "201": _json(
                    "stored (or the first answer again, for a repeated key)", "CallbackCreated"
                ),
                "200": _json("this number is already waiting: its request", "CallbackCreated"),
                "400": _error("not a JSON object, a missing or wrongly typed field"),
                "403": _error("the web site (Origin) may not post for this business"),
                "404": _error("no such business"),
                "409": _error("the Idempotency-Key was used for another request"),
                "413": _error("more than 16 KiB"),
                "422": _error("a field that cannot be accepted, said in plain words"),
            },
        }
    },
    "/api/v1/callbacks/{request_id}": {
        "get": {
            "operationId": "getCallback",
            "summary": "A call-back request's status, queue position and history",
            "parameters": [_REQUEST_ID, _TOKEN_QUERY],
            "security": _VISITOR,
            "responses": {
                "200": _json("the request", "Callback"),
                "404": _error("no such request, or not this token"),
            },
        }
    },
    "/api/v1/callbacks/{request_id}/reschedule": {
        "post": {
            "operationId": "rescheduleCallback",
            "summary": "Move a call-back request nobody has started calling to another slot, "
            "or to as soon as possible",
            "parameters": [_REQUEST_ID, _TOKEN_QUERY],
            "security": _VISITOR,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/CallbackReschedule"}
                    }
                },
            },
            "responses": {
                "200": _json("moved", "Callback"),
                "400": _error("not a JSON object, an unknown or missing field"),
                "404": _error("no such request, or not this token"),
                "409": _error(
                    "the slot is full (error.next_free lists the next free ones), or the "
                    "request is under way or over"
                ),
                "413": _error("more than 16 KiB"),
                "422": _error("a time that cannot be booked, said in plain words"),
            },
        }
    },
    "/api/v1/callbacks/{request_id}/cancel": {
        "post": {
            "operationId": "cancelCallback",
            "summary": "Cancel a call-back request that has not ended",
            "parameters": [_REQUEST_ID, _TOKEN_QUERY],
            "security": _VISITOR,
            "responses": {
                "200": _json("canceled", "Callback"),
                "404": _error("no such request, or not this token"),
                "409": _error("the request has already ended"),
            },
        }
    },
    "/api/v1/subscribers/{slug}/slots": {
        "get": {
            "operationId": "listSlots",
            "summary": "A business's bookable slots, with the places left in each",
            "parameters": [
                {"name": "slug", "in": "path", "required": True, "schema": _TEXT},
                {
                    "name": "date",
                    "in": "query",
                    "required": False,
                    "description": "the first day, in the business's time zone; default today",
                    "schema": {"type": "string", "format": "date"},
                    "allowEmptyValue": True,
                },
                {
                    "name": "days",
                    "in": "query",
                    "required": False,
                    "description": "how many days; default and most: the booking window",
                    "schema": {"type": "integer", "minimum": 1, "maximum": api.MAX_SLOT_DAYS},
                    "allowEmptyValue": True,
                },
            ],
            "responses": {
                "200": {
                    **_json("the slots", "SlotList"),
                    "headers": {
                        "Access-Control-Allow-Origin": {
                            "description": "*: any page may read them",
                            "schema": {"type": "string"},
                        }
                    },
                },
                "404": _error("no such business"),
                "422": _error("a date or a number of days that cannot be read"),
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "health",
            "summary": "Whether the service and its database answer",
            "responses": {
                "200": {"description": "healthy"},
                "503": {"description": "the database does not answer"},
            },
        }
    },
}


# Rate limits (ratelimits.py): every public call may be refused for a while.
_RATE_LIMITED = {
    **_error("too many requests from this address, for this number or for this business"),
    "headers": {
        "Retry-After": {
            "description": "seconds to wait before asking again",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}
for _path, _operations in PATHS.items():
    if _path.startswith("/api/v1/"):
        for _operation in _operations.values():
            _operation["responses"]["429"] = _RATE_LIMITED
PATHS["/api/v1/callbacks"]["post"]["responses"]["503"] = _error(
    "the business's CAPTCHA provider cannot be asked just now: nothing was stored"
)


# --- the admin API (/api/v1/admin, views/admin.py) -------------------------------------------


def _ref(schema: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema}"}


def _nullable_enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": ["string", "null"], "enum": [*values, None]}


def _whole(bounds: tuple[int, int], *, nullable: bool = False) -> dict[str, Any]:
    low, high = bounds
    kind: str | list[str] = ["integer", "null"] if nullable else "integer"
    return {"type": kind, "minimum": low, "maximum": high}


_MONTH = {"type": "string", "pattern": r"^\d{4}-\d{2}$"}

_TEXT_OR_LIST = {
    "type": ["string", "array", "null"],
    "items": {"type": "string"},
    "description": "comma-separated, or a list",
}

_INBOUND_NUMBER_WORDS = (
    "another number calls in reach the business's agents by, besides caller_id; null: none"
)
_INBOUND_NUMBER = {
    "type": ["string", "null"],
    "description": f"E.164; {_INBOUND_NUMBER_WORDS}",
    "example": "+12015550111",
}
_UNKNOWN_CALLERS = (
    "what a caller without a waiting call-back gets: agents (rung through) or message "
    "('nobody is available', then the call ends)"
)
_UNKNOWN_CALLERS_SHOWN = {
    "type": "string",
    "enum": list(subscribers.UNKNOWN_CALLERS),
    "description": _UNKNOWN_CALLERS,
}

ADMIN_SCHEMAS: dict[str, Any] = {
    "AdminSubscriberCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": list(admin.SUBSCRIBER_REQUIRED),
        "properties": {
            "slug": {
                "type": "string",
                "minLength": 1,
                "description": "2 to 40 lowercase letters, digits and '-'",
                "example": "acme",
            },
            "display_name": {
                "type": "string",
                "minLength": 1,
                "maxLength": subscribers.MAX_DISPLAY_NAME,
            },
            "country": {
                "type": "string",
                "minLength": 1,
                "description": "ISO 3166 alpha-2",
                "example": "US",
            },
            "caller_id": {
                "type": "string",
                "minLength": 1,
                "description": "E.164",
                "example": "+12015550100",
            },
            "time_zone": {
                "type": ["string", "null"],
                "description": "IANA time zone; default UTC",
                "example": "America/Los_Angeles",
            },
            "language": _nullable_enum(subscribers.LANGUAGES),
            "call_order": _nullable_enum(subscribers.CALL_ORDERS),
            "max_attempts": _whole(subscribers.MAX_ATTEMPTS, nullable=True),
            "retry_interval_seconds": _whole(subscribers.RETRY_INTERVAL_SECONDS, nullable=True),
            "wrap_up_seconds": {
                **_whole(subscribers.WRAP_UP_SECONDS, nullable=True),
                "description": "after a call-back an agent talked in, the time before they are "
                "offered the next (for notes); default 0",
            },
            "inbound_number": _INBOUND_NUMBER,
            "unknown_callers": {
                **_nullable_enum(subscribers.UNKNOWN_CALLERS),
                "description": f"{_UNKNOWN_CALLERS}; default agents",
            },
            "allowed_countries": {
                **_TEXT_OR_LIST,
                "description": "ISO countries visitors' numbers may be in; default: country",
            },
            "allowed_origins": {
                **_TEXT_OR_LIST,
                "description": "web origins the widget may post from",
            },
        },
    },
    "AdminSubscriber": {
        "type": "object",
        "required": [
            "slug",
            "display_name",
            "country",
            "caller_id",
            "time_zone",
            "language",
            "call_order",
            "max_attempts",
            "retry_interval_seconds",
            "wrap_up_seconds",
            "inbound_number",
            "unknown_callers",
            "allowed_countries",
            "allowed_origins",
            "active",
            "created_at",
            "agents",
        ],
        "properties": {
            "slug": _TEXT,
            "display_name": _TEXT,
            "country": _TEXT,
            "caller_id": _TEXT,
            "time_zone": _TEXT,
            "language": _TEXT,
            "call_order": _TEXT,
            "max_attempts": {"type": "integer"},
            "retry_interval_seconds": {"type": "integer"},
            "wrap_up_seconds": {"type": "integer"},
            "inbound_number": {**_NULLABLE_TEXT, "description": _INBOUND_NUMBER_WORDS},
            "unknown_callers": _UNKNOWN_CALLERS_SHOWN,
            "whisper_prompt": _NULLABLE_TEXT,
            "allowed_countries": {
                "type": "array",
                "items": _TEXT,
                "description": "empty: the subscriber's own country only",
            },
            "allowed_origins": {"type": "array", "items": _TEXT},
            "number_types": {
                "type": "array",
                "items": _TEXT,
                "description": "the kinds of numbers visitors may give (see number-types)",
            },
            "active": {"type": "boolean"},
            "created_at": _TIME,
            "agents": {
                "type": "array",
                "description": "the agents who serve it, in the order they are called",
                "items": {
                    "type": "object",
                    "required": ["name", "priority", "active"],
                    "properties": {
                        "name": _TEXT,
                        "priority": {"type": "integer"},
                        "active": {"type": "boolean"},
                    },
                },
            },
        },
    },
    "AdminSubscriberCreated": {
        "allOf": [
            _ref("AdminSubscriber"),
            {
                "type": "object",
                "required": ["widget_key"],
                "properties": {"widget_key": {"type": "string", "description": "shown only here"}},
            },
        ]
    },
    "AdminSubscriberList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref("AdminSubscriber")}},
    },
    "AdminAgentCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {
                "type": "string",
                "minLength": 1,
                "description": "also the SIP user: lowercase letters, digits, '-' and '_'",
                "example": "alice",
            },
            "contact": {
                "type": ["string", "null"],
                "description": "a fixed phone's SIP URI; without one the phone registers",
                "example": "sip:alice@192.0.2.10:5060",
            },
            "dtmf_mode": _nullable_enum(DTMF_MODES),
        },
    },
    "AdminAgent": {
        "type": "object",
        "required": [
            "name",
            "contact",
            "registers",
            "dtmf_mode",
            "active",
            "created_at",
            "state",
            "pause_reason",
            "presence",
            "on_call",
            "wrap_up_until",
        ],
        "properties": {
            "name": _TEXT,
            "contact": _NULLABLE_TEXT,
            "registers": {"type": "boolean", "description": "the phone registers (no contact)"},
            "dtmf_mode": _TEXT,
            "active": {"type": "boolean"},
            "created_at": _TIME,
            "state": {
                "type": "string",
                "enum": [*(state.value for state in AgentState), INACTIVE],
                "description": "what routing makes of the agent now, as the console shows it "
                "(inactive: no calls at all)",
            },
            "pause_reason": _NULLABLE_TEXT,
            "presence": {
                **_NULLABLE_TEXT,
                "description": "the phone as AMI reports it (available, ringing, in_use, "
                "offline); null until seen",
            },
            "on_call": {**_NULLABLE_TEXT, "description": "the request whose call holds the agent"},
            "wrap_up_until": _NULLABLE_TIME,
        },
    },
    "AdminAgentCreated": {
        "allOf": [
            _ref("AdminAgent"),
            {
                "type": "object",
                "required": ["sip_password"],
                "properties": {
                    "sip_password": {
                        "type": ["string", "null"],
                        "description": "a registering phone's password: shown only here",
                    }
                },
            },
        ]
    },
    "AdminAgentList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref("AdminAgent")}},
    },
    "AdminAssignment": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "priority": {
                **_whole(subscribers.PRIORITY, nullable=True),
                "description": "lower is called first; default: unchanged, or 100 when new",
            }
        },
    },
    "AdminRequestSummary": {
        "type": "object",
        "required": ["id", "status", "subscriber", "phone", "due_at", "created_at"],
        "properties": {
            "id": _TEXT,
            "status": {"type": "string", "enum": STATUSES},
            "subscriber": {"type": "string", "description": "the subscriber's slug"},
            "phone": _TEXT,
            "name": _NULLABLE_TEXT,
            "topic": _NULLABLE_TEXT,
            "requested_time": _NULLABLE_TIME,
            "due_at": _TIME,
            "attempt_count": {"type": "integer"},
            "created_at": _TIME,
            "updated_at": _TIME,
        },
    },
    "AdminRequestList": {
        "type": "object",
        "required": ["items", "total", "limit", "offset"],
        "properties": {
            "items": {
                "type": "array",
                "items": _ref("AdminRequestSummary"),
                "description": "newest first",
            },
            "total": {"type": "integer", "minimum": 0, "description": "all that match"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    },
    "AdminSchedule": {
        "type": "object",
        "required": [
            "time_zone",
            "hours",
            "outside_hours",
            "slot_minutes",
            "slot_capacity",
            "booking_days",
            "deadline_days",
            "max_attempts",
            "retry_interval_seconds",
            "retry_rules",
            "wrap_up_seconds",
            "inbound_number",
            "unknown_callers",
        ],
        "properties": {
            "time_zone": _TEXT,
            "hours": {**_ref("OpeningHours"), "description": "null: open around the clock"},
            "outside_hours": {"type": "string", "enum": list(subscribers.OUTSIDE_HOURS)},
            "slot_minutes": {"type": "integer"},
            "slot_capacity": {
                "type": ["integer", "null"],
                "description": "places per slot; null: one per active agent",
            },
            "booking_days": {"type": "integer"},
            "deadline_days": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "retry_interval_seconds": {"type": "integer"},
            "retry_rules": _ref("RetryRules"),
            "wrap_up_seconds": {"type": "integer", "description": "0: no wrap-up"},
            "inbound_number": {**_NULLABLE_TEXT, "description": _INBOUND_NUMBER_WORDS},
            "unknown_callers": _UNKNOWN_CALLERS_SHOWN,
        },
    },
    "AdminScheduleChange": {
        "type": "object",
        "additionalProperties": False,
        "description": "the settings to change; those left out stay as they are",
        "properties": {
            "hours": {**_ref("OpeningHours"), "description": "null: open around the clock"},
            "outside_hours": {
                "type": "string",
                "enum": list(subscribers.OUTSIDE_HOURS),
                "description": 'what "asap" becomes while closed',
            },
            "slot_minutes": _whole(subscribers.SLOT_MINUTES),
            "slot_capacity": {
                **_whole(subscribers.SLOT_CAPACITY, nullable=True),
                "description": "places per slot; null: one per active agent",
            },
            "booking_days": {
                **_whole(subscribers.BOOKING_DAYS),
                "description": "how many days ahead slots may be booked, today included",
            },
            "deadline_days": {
                **_whole(subscribers.DEADLINE_DAYS),
                "description": "how many days after its day a request may still be called",
            },
            "retry_rules": {
                "anyOf": [_ref("RetryRules"), {"type": "null"}],
                "description": "null or {}: the subscriber's max_attempts and retry interval",
            },
            "wrap_up_seconds": {
                **_whole(subscribers.WRAP_UP_SECONDS),
                "description": "after a call-back an agent talked in, the time before they are "
                "offered the next (for notes); 0: none",
            },
            "inbound_number": _INBOUND_NUMBER,
            "unknown_callers": _UNKNOWN_CALLERS_SHOWN,
        },
    },
    "AdminUsageFigures": {
        "type": "object",
        "required": ["attempts", "connected", "billable_seconds", "billable_minutes"],
        "properties": {
            "attempts": {"type": "integer", "minimum": 0, "description": "calls tried"},
            "connected": {"type": "integer", "minimum": 0, "description": "attempts answered"},
            "billable_seconds": {
                "type": "integer",
                "minimum": 0,
                "description": "Asterisk's, from its call detail records",
            },
            "billable_minutes": {"type": "number", "minimum": 0, "description": "to 0.1"},
        },
    },
    "AdminUsage": {
        "type": "object",
        "required": ["subscriber", "month", "time_zone", "days", "total"],
        "properties": {
            "subscriber": {"type": "string", "description": "the subscriber's slug"},
            "month": _MONTH,
            "time_zone": {"type": "string", "description": "the days are the subscriber's"},
            "days": {
                "type": "array",
                "description": "every day of the month, in order",
                "items": {
                    "allOf": [
                        _ref("AdminUsageFigures"),
                        {
                            "type": "object",
                            "required": ["date"],
                            "properties": {"date": {"type": "string", "format": "date"}},
                        },
                    ]
                },
            },
            "total": _ref("AdminUsageFigures"),
        },
    },
    "OpeningHours": {
        "type": ["object", "null"],
        "required": ["weekly"],
        "additionalProperties": False,
        "properties": {
            "weekly": {
                "type": "object",
                "additionalProperties": False,
                "description": "a day left out is closed",
                "properties": {day: _ref("Openings") for day in WEEKDAYS},
            },
            "exceptions": {
                "type": ["object", "null"],
                "description": "dates (2026-12-25) with other openings; [] closed",
                "maxProperties": MAX_EXCEPTIONS,
                "additionalProperties": _ref("Openings"),
            },
        },
        "example": {
            "weekly": {day: ["09:00-12:00", "13:00-17:00"] for day in WEEKDAYS[:5]},
            "exceptions": {"2026-12-25": []},
        },
    },
    "Openings": {
        "type": "array",
        "maxItems": MAX_INTERVALS_PER_DAY,
        "description": "a day's openings in local time, not overlapping; [] closed",
        "items": {
            "type": "string",
            "pattern": "^[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}$",
            # Said to whoever sends another: "'9-5' is not an opening like 09:00-17:30".
            "description": "an opening like 09:00-17:30",
        },
        "example": ["09:00-17:00"],
    },
    "RetryRules": {
        "type": "object",
        "additionalProperties": False,
        "description": "per outcome; outcomes left out use max_attempts and the retry interval",
        "properties": {
            kind: {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    name: {
                        "type": "integer"
                        if name in ("max_attempts", "delay_seconds")
                        else "number",
                        "minimum": low,
                        "maximum": high,
                    }
                    for name, (low, high) in LIMITS.items()
                },
            }
            for kind in OUTCOME_KINDS
        },
    },
    "AdminRequest": {
        "allOf": [
            _ref("Callback"),
            {
                "type": "object",
                "required": ["attempt_count"],
                "properties": {
                    "page_url": _NULLABLE_TEXT,
                    "attempt_count": {"type": "integer"},
                },
            },
        ]
    },
}

_ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]
_UNAUTHORIZED = {
    **_error("no admin token, or one that is unknown or revoked"),
    "headers": {
        "WWW-Authenticate": {
            "required": True,
            "description": 'Bearer realm="cbserver admin"',
            "schema": {"type": "string"},
        }
    },
}
_HIDDEN = "no such subscriber, or not one this token is for"
_SLUG = {"name": "slug", "in": "path", "required": True, "schema": _TEXT}
_AGENT = {"name": "agent", "in": "path", "required": True, "schema": _TEXT}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
        # Given empty (a filter form's blank field) is as if not given.
        "allowEmptyValue": True,
    }


def _admin(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    body_required: bool = True,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["admin"],
        "security": _ADMIN,
        "responses": {**responses, "401": _UNAUTHORIZED},
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        operation["responses"].setdefault(
            "400", _error("not a JSON object, an unknown, missing or wrongly typed field")
        )
        operation["responses"]["413"] = _error("more than 16 KiB")
    return operation


ADMIN_PATHS: dict[str, Any] = {
    "/api/v1/admin/subscribers": {
        "get": _admin(
            "adminListSubscribers",
            "Subscribers with their agents (a token for one subscriber: that one)",
            {"200": _json("the subscribers, by slug", "AdminSubscriberList")},
        ),
        "post": _admin(
            "adminCreateSubscriber",
            "Add a subscriber (a token for all subscribers only)",
            {
                "201": _json("added; its widget key is shown only here", "AdminSubscriberCreated"),
                "403": _error("the token is for one subscriber"),
                "409": _error("a subscriber of that slug exists"),
                "422": _error("a field that cannot be accepted (named in error.field)"),
            },
            body="AdminSubscriberCreate",
        ),
    },
    "/api/v1/admin/subscribers/{slug}": {
        "get": _admin(
            "adminGetSubscriber",
            "A subscriber, with its agents in the order they are called",
            {"200": _json("the subscriber", "AdminSubscriber"), "404": _error(_HIDDEN)},
            parameters=[_SLUG],
        )
    },
    "/api/v1/admin/subscribers/{slug}/schedule": {
        "get": _admin(
            "adminGetSchedule",
            "A subscriber's opening hours, slots, deadlines and retry rules",
            {"200": _json("the schedule", "AdminSchedule"), "404": _error(_HIDDEN)},
            parameters=[_SLUG],
        ),
        "patch": _admin(
            "adminChangeSchedule",
            "Change some of the schedule settings (all or none); those left out stay",
            {
                "200": _json("changed; the whole schedule", "AdminSchedule"),
                "404": _error(_HIDDEN),
                "422": _error("a setting that cannot be used (named in error.field)"),
            },
            parameters=[_SLUG],
            body="AdminScheduleChange",
        ),
    },
    "/api/v1/admin/subscribers/{slug}/usage": {
        "get": _admin(
            "adminGetUsage",
            "A subscriber's call-back attempts, connected calls and billable minutes in a "
            "month, every day of it in the subscriber's time zone",
            {
                "200": _json("the month's usage", "AdminUsage"),
                "400": _error("an unknown or repeated query parameter"),
                "404": _error(_HIDDEN),
                "422": _error("a month that cannot be read (error.field: month)"),
            },
            parameters=[
                _SLUG,
                _query(
                    "month",
                    _MONTH,
                    "like 2026-11; default: this month in the subscriber's time zone",
                ),
            ],
        )
    },
    "/api/v1/admin/subscribers/{slug}/agents/{agent}": {
        "put": _admin(
            "adminAssignAgent",
            "Let an agent serve the subscriber, or change its priority",
            {
                "200": _json("the priority is set; the subscriber", "AdminSubscriber"),
                "201": _json("assigned; the subscriber", "AdminSubscriber"),
                "403": _error("a token for one subscriber, and an agent who does not serve it"),
                "404": _error(_HIDDEN + "; or no such agent"),
                "422": _error("a priority out of range"),
            },
            parameters=[_SLUG, _AGENT],
            body="AdminAssignment",
            body_required=False,
        ),
        "delete": _admin(
            "adminUnassignAgent",
            "Stop an agent serving the subscriber",
            {
                "200": _json("unassigned; the subscriber", "AdminSubscriber"),
                "404": _error(_HIDDEN + "; or no such agent, or it does not serve it"),
            },
            parameters=[_SLUG, _AGENT],
        ),
    },
    "/api/v1/admin/agents": {
        "get": _admin(
            "adminListAgents",
            "Agents by name (a token for one subscriber: those who serve it)",
            {"200": _json("the agents", "AdminAgentList")},
        ),
        "post": _admin(
            "adminCreateAgent",
            "Add an agent (a token for all subscribers only). A running Asterisk learns of it "
            "when the command line next syncs agents (cbserver agent add, asterisk start).",
            {
                "201": _json(
                    "added; a registering phone's password is shown only here", "AdminAgentCreated"
                ),
                "403": _error("the token is for one subscriber"),
                "409": _error("an agent of that name exists"),
                "422": _error("a field that cannot be accepted (named in error.field)"),
            },
            body="AdminAgentCreate",
        ),
    },
    "/api/v1/admin/requests": {
        "get": _admin(
            "adminListRequests",
            "Call-back requests, newest first, filtered",
            {
                "200": _json("a page of the requests that match", "AdminRequestList"),
                "400": _error("an unknown or repeated query parameter"),
                "404": _error(_HIDDEN),
                "422": _error("a filter that cannot be read (named in error.field)"),
            },
            parameters=[
                _query("subscriber", _TEXT, "a subscriber's slug"),
                _query(
                    "status",
                    _TEXT,
                    "one or more statuses, comma-separated: " + ", ".join(STATUSES),
                ),
                _query("phone", _TEXT, "the visitor's number in E.164 (+ as %2B)"),
                _query(
                    "created_from",
                    {"type": "string", "format": "date-time"},
                    "created at or after this time (ISO 8601 with a zone)",
                ),
                _query(
                    "created_to",
                    {"type": "string", "format": "date-time"},
                    "created before this time (ISO 8601 with a zone)",
                ),
                _query(
                    "limit",
                    _whole(admin.LIMIT),
                    f"at most this many items (default {admin.DEFAULT_LIMIT})",
                ),
                _query("offset", _whole(admin.OFFSET), "skip this many (default 0)"),
            ],
        )
    },
    "/api/v1/admin/requests/{request_id}": {
        "get": _admin(
            "adminGetRequest",
            "A call-back request with its history and call attempts",
            {
                "200": _json("the request", "AdminRequest"),
                "404": _error("no such request, or not for this token's subscriber"),
            },
            parameters=[_REQUEST_ID],
        )
    },
    "/api/v1/admin/requests/{request_id}/reschedule": {
        "post": _admin(
            "adminRescheduleRequest",
            "Move a call-back request nobody has started calling to another slot, or to as "
            "soon as possible",
            {
                "200": _json("moved", "AdminRequest"),
                "404": _error("no such request, or not for this token's subscriber"),
                "409": _error(
                    "the slot is full (error.next_free lists the next free ones), or the "
                    "request is under way or over"
                ),
                "422": _error("a time that cannot be booked, said in plain words"),
            },
            parameters=[_REQUEST_ID],
            body="CallbackReschedule",
        )
    },
    "/api/v1/admin/requests/{request_id}/cancel": {
        "post": _admin(
            "adminCancelRequest",
            "Cancel a call-back request that has not ended",
            {
                "200": _json("canceled", "AdminRequest"),
                "404": _error("no such request, or not for this token's subscriber"),
                "409": _error("the request has ended, or a call is on"),
            },
            parameters=[_REQUEST_ID],
        )
    },
}


# --- the number policy, the deny-list and the audit log (admin) ------------------------------

_TYPE_NAMES = {"type": "string", "enum": list(number_policy.TYPE_NAMES)}
_ENTRY_ID = {"name": "entry_id", "in": "path", "required": True, "schema": _TEXT}

SECURITY_SCHEMAS: dict[str, Any] = {
    "AdminNumberTypes": {
        "type": "object",
        "required": ["number_types", "default"],
        "properties": {
            "number_types": {
                "type": "array",
                "items": _TYPE_NAMES,
                "description": "the kinds of numbers visitors may give",
            },
            "default": {
                "type": "boolean",
                "description": "true: the default (" + ", ".join(number_policy.DEFAULT_TYPES) + ")",
            },
        },
    },
    "AdminNumberTypesChange": {
        "type": "object",
        "additionalProperties": False,
        "required": ["number_types"],
        "properties": {
            "number_types": {
                "type": ["string", "array", "null"],
                "items": _TEXT,
                "description": "comma-separated, or a list; null: the default. Known: "
                + ", ".join(number_policy.TYPE_NAMES),
                "example": ["fixed_line", "mobile", "fixed_line_or_mobile"],
            }
        },
    },
    "AdminDeniedNumberCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["pattern"],
        "properties": {
            "pattern": {
                "type": "string",
                "minLength": 1,
                "description": "'+' and digits, E.164: a number, or with prefix a prefix of at "
                "least 2 digits",
                "example": "+4490",
            },
            "prefix": {
                "type": ["boolean", "null"],
                "description": "true: every number that starts with pattern; default false",
            },
            "reason": {"type": ["string", "null"], "maxLength": number_policy.MAX_REASON},
            "subscriber": {
                "type": ["string", "null"],
                "description": "only for this subscriber's visitors; default: every subscriber "
                "(a token for one subscriber: its own)",
            },
        },
    },
    "AdminDeniedNumber": {
        "type": "object",
        "required": ["id", "pattern", "prefix", "subscriber", "reason", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "pattern": _TEXT,
            "prefix": {"type": "boolean"},
            "subscriber": {
                "type": ["string", "null"],
                "description": "the subscriber's slug; null: every subscriber",
            },
            "reason": _TEXT,
            "created_at": _TIME,
        },
    },
    "AdminDeniedNumberList": {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "items": _ref("AdminDeniedNumber"),
                "description": "oldest first",
            }
        },
    },
    "AdminAuditList": {
        "type": "object",
        "required": ["items", "limit"],
        "properties": {
            "items": {
                "type": "array",
                "description": "newest first",
                "items": {
                    "type": "object",
                    "required": ["id", "at", "actor", "action", "subscriber", "detail"],
                    "properties": {
                        "id": {"type": "integer"},
                        "at": _TIME,
                        "actor": {
                            "type": "string",
                            "description": "an admin token's name, cli, or visitor and the "
                            "client's address",
                        },
                        "action": {
                            "type": "string",
                            "description": "a stable code, like subscriber_added or number_refused",
                        },
                        "subscriber": {
                            "type": ["string", "null"],
                            "description": "the subscriber's slug, if it concerns one",
                        },
                        "detail": _TEXT,
                    },
                },
            },
            "limit": {"type": "integer"},
        },
    },
}

SECURITY_PATHS: dict[str, Any] = {
    "/api/v1/admin/subscribers/{slug}/number-types": {
        "get": _admin(
            "adminGetNumberTypes",
            "Which kinds of numbers the subscriber's visitors may give",
            {"200": _json("the number types", "AdminNumberTypes"), "404": _error(_HIDDEN)},
            parameters=[_SLUG],
        ),
        "put": _admin(
            "adminSetNumberTypes",
            "Set which kinds of numbers the subscriber's visitors may give (a token for all "
            "subscribers only: allowing premium-rate numbers costs whoever pays the trunk)",
            {
                "200": _json("set; the number types", "AdminNumberTypes"),
                "403": _error("the token is for one subscriber"),
                "404": _error(_HIDDEN),
                "422": _error("an unknown number type, or none"),
            },
            parameters=[_SLUG],
            body="AdminNumberTypesChange",
        ),
    },
    "/api/v1/admin/denied-numbers": {
        "get": _admin(
            "adminListDeniedNumbers",
            "The deny-list: numbers and prefixes never called (a token for one subscriber: "
            "those for every subscriber, and its own)",
            {"200": _json("the entries", "AdminDeniedNumberList")},
        ),
        "post": _admin(
            "adminDenyNumber",
            "Deny a number, or every number under a prefix, for every subscriber or for one",
            {
                "201": _json("denied", "AdminDeniedNumber"),
                "404": _error(_HIDDEN),
                "409": _error("the entry is on the list already"),
                "422": _error("a pattern or reason that cannot be used (named in error.field)"),
            },
            body="AdminDeniedNumberCreate",
        ),
    },
    "/api/v1/admin/denied-numbers/{entry_id}": {
        "delete": _admin(
            "adminUndenyNumber",
            "Remove an entry from the deny-list",
            {
                "200": _json("removed; the entry it was", "AdminDeniedNumber"),
                "403": _error("an entry for every subscriber, and a token for one"),
                "404": _error("no such entry, or one for another subscriber"),
            },
            parameters=[_ENTRY_ID],
        )
    },
    "/api/v1/admin/audit": {
        "get": _admin(
            "adminListAuditEvents",
            "The audit log: what admins did and what was refused, newest first (a token for "
            "one subscriber: that subscriber's rows)",
            {
                "200": _json("the rows", "AdminAuditList"),
                "400": _error("an unknown or repeated query parameter"),
                "404": _error(_HIDDEN),
                "422": _error("a filter that cannot be read (named in error.field)"),
            },
            parameters=[
                _query("subscriber", _TEXT, "a subscriber's slug"),
                _query("action", _TEXT, "one or more action codes, comma-separated"),
                _query(
                    "since",
                    {"type": "string", "format": "date-time"},
                    "at or after this time (ISO 8601 with a zone)",
                ),
                _query(
                    "limit",
                    _whole(admin.LIMIT),
                    f"at most this many rows (default {admin.DEFAULT_LIMIT})",
                ),
            ],
        )
    },
}


# --- a subscriber's CAPTCHA (captcha.py) ------------------------------------------------------

CAPTCHA_SCHEMAS: dict[str, Any] = {
    "AdminCaptcha": {
        "type": "object",
        "required": ["provider", "site_key", "secret_set", "verify_url"],
        "properties": {
            "provider": {**_nullable_enum(tuple(captcha.PROVIDERS)), "description": "null: off"},
            "site_key": _NULLABLE_TEXT,
            "secret_set": {"type": "boolean", "description": "the secret is never shown"},
            "verify_url": {
                **_NULLABLE_TEXT,
                "description": "where answers are checked; null: the provider's own address",
            },
        },
    },
    "AdminCaptchaChange": {
        "type": "object",
        "additionalProperties": False,
        "required": ["provider"],
        "properties": {
            "provider": {
                **_nullable_enum(tuple(captcha.PROVIDERS)),
                "description": "null turns the CAPTCHA off",
            },
            "site_key": {"type": ["string", "null"], "maxLength": captcha.MAX_KEY},
            "secret": {
                "type": ["string", "null"],
                "maxLength": captcha.MAX_KEY,
                "description": "left out: the one set before stays",
            },
            "verify_url": {
                "type": ["string", "null"],
                "maxLength": captcha.MAX_VERIFY_URL,
                "description": "where answers are checked instead of the provider's address: "
                "https, or http to this machine; a token for all subscribers only",
            },
        },
    },
}

CAPTCHA_PATHS: dict[str, Any] = {
    "/api/v1/admin/subscribers/{slug}/captcha": {
        "get": _admin(
            "adminGetCaptcha",
            "The subscriber's CAPTCHA on its form and widget (never the secret)",
            {"200": _json("the CAPTCHA", "AdminCaptcha"), "404": _error(_HIDDEN)},
            parameters=[_SLUG],
        ),
        "put": _admin(
            "adminSetCaptcha",
            "Turn the subscriber's CAPTCHA on (Turnstile, hCaptcha or reCAPTCHA) or off",
            {
                "200": _json("set; the CAPTCHA", "AdminCaptcha"),
                "403": _error("a token for one subscriber gave a verify address"),
                "404": _error(_HIDDEN),
                "422": _error(
                    "no site key or secret (another provider needs both anew), or a verify "
                    "address that is no https URL"
                ),
            },
            parameters=[_SLUG],
            body="AdminCaptchaChange",
        ),
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cbserver",
            "version": "1",
            "description": "Web call-back requests: ask for a call-back (as soon as possible "
            "or in a bookable slot), follow it, move it, cancel it; and, under /api/v1/admin, "
            "run the service (subscribers, their schedules, agents, requests).",
        },
        "paths": {**PATHS, **ADMIN_PATHS, **SECURITY_PATHS, **CAPTCHA_PATHS},
        "components": {
            "schemas": {**SCHEMAS, **ADMIN_SCHEMAS, **SECURITY_SCHEMAS, **CAPTCHA_SCHEMAS},
            "securitySchemes": {
                "visitorToken": {"type": "http", "scheme": "bearer"},
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an admin token from `cbserver token create NAME`, for all "
                    "subscribers or for one (`--subscriber SLUG`)",
                },
            },
        },
    }


@blueprint.get("/api/v1/openapi.json")
def openapi() -> Response:
    return jsonify(document())
