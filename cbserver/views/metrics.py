"""``/metrics``: Prometheus text for the operator.

Request counts come from the database at scrape time, so every web process tells the same
truth; HTTP answers are counted per process.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from flask import Blueprint, Response, abort, current_app, request
from flask.blueprints import BlueprintSetupState
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.models import CallAttempt, CallbackRequest, RequestStatus, Subscriber
from cbserver.web import services

blueprint = Blueprint("metrics", __name__)
REGISTRY_KEY = "cbserver.metrics"


class CallbackRequestsByStatus(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "cbserver_callback_requests",
            "Call-back requests by subscriber and status.",
            labels=["subscriber", "status"],
        )
        with self.sessions() as session:
            rows = session.execute(
                select(Subscriber.slug, CallbackRequest.status, func.count())
                .join(Subscriber, CallbackRequest.subscriber_id == Subscriber.id)
                .group_by(Subscriber.slug, CallbackRequest.status)
            ).all()
            slugs = session.scalars(select(Subscriber.slug)).all()
        counts = {(slug, status): count for slug, status, count in rows}
        # Every status of every subscriber, zeros included, so rates and alerts see them.
        for slug in slugs:
            for status in RequestStatus:
                family.add_metric([slug, status.value], counts.get((slug, status.value), 0))
        yield family
        yield self._attempts()

    def _attempts(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "cbserver_call_attempts",
            "Call attempts by subscriber and outcome (in_progress until they end).",
            labels=["subscriber", "outcome"],
        )
        with self.sessions() as session:
            rows = session.execute(
                select(Subscriber.slug, CallAttempt.outcome, func.count())
                .join(CallbackRequest, CallAttempt.request_id == CallbackRequest.id)
                .join(Subscriber, CallbackRequest.subscriber_id == Subscriber.id)
                .group_by(Subscriber.slug, CallAttempt.outcome)
            ).all()
        for slug, outcome, count in rows:
            family.add_metric([slug, outcome or "in_progress"], count)
        return family


class Metrics:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(CallbackRequestsByStatus(sessions))
        self.http_answers = Counter(
            "cbserver_http_answers",
            "HTTP answers by endpoint and status code (this process).",
            ["endpoint", "code"],
            registry=self.registry,
        )


@blueprint.record_once
def _install(state: BlueprintSetupState) -> None:
    app = state.app
    metrics = Metrics(app.extensions["cbserver"].sessions)
    app.extensions[REGISTRY_KEY] = metrics

    @app.after_request
    def count_answer(response: Response) -> Response:
        endpoint = request.endpoint or "unknown"
        metrics.http_answers.labels(endpoint, str(response.status_code)).inc()
        return response


def _allowed(address: str | None) -> bool:
    if not address:
        return False
    networks = services().settings.metrics_networks.split(",")
    client = ipaddress.ip_address(address)
    return any(
        client in ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip()
    )


@blueprint.get("/metrics")
def metrics() -> Response:
    if not _allowed(request.remote_addr):
        abort(404)
    registry = current_app.extensions[REGISTRY_KEY].registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
