"""The hosted form ``/c/<slug>``: what a business links to from its web page."""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, redirect, render_template, request
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import DateTimeLocalField, HiddenField, RadioField, StringField, TextAreaField

# types-WTForms lags WTForms 3.3, where SelectChoice replaced choice tuples.
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]
from wtforms.validators import InputRequired, Length, Optional

from cbserver import intake
from cbserver.errors import CbError, Invalid
from cbserver.i18n import _, _l, use_language
from cbserver.intake import MAX_NAME, MAX_TOPIC, Submission
from cbserver.models import Subscriber
from cbserver.views.present import status_url
from cbserver.web import db_session, request_stored

blueprint = Blueprint("form", __name__)


class CallbackForm(FlaskForm):
    phone = StringField(
        _l("Your phone number"),
        validators=[InputRequired(_l("Please enter your phone number."))],
        render_kw={"autocomplete": "tel", "inputmode": "tel"},
    )
    name = StringField(
        _l("Your name (optional)"),
        validators=[Optional(), Length(max=MAX_NAME)],
        render_kw={"autocomplete": "name"},
    )
    topic = TextAreaField(
        _l("What would you like to talk about? (optional)"),
        validators=[Optional(), Length(max=MAX_TOPIC)],
    )
    when = RadioField(
        _l("When should we call you?"),
        choices=[
            SelectChoice("asap", _l("As soon as possible")),
            SelectChoice("later", _l("At a time I choose")),
        ],
        default="asap",
    )
    later_at = DateTimeLocalField(
        _l("Date and time"), format="%Y-%m-%dT%H:%M", validators=[Optional()]
    )
    page_url = HiddenField()
    # Generated per form shown: a double-click or a resent form finds the same request.
    submission_id = HiddenField()


# The intake service names fields as the API does; the form shows some of them elsewhere.
FORM_FIELD = {"when": "later_at", "page_url": "phone", "subscriber": "phone"}


def _when(form: CallbackForm, subscriber: Subscriber) -> str:
    if form.when.data != "later":
        return "asap"
    chosen = form.later_at.data
    if not isinstance(chosen, datetime):
        raise Invalid(_("Please choose a date and time."), field="when", code="time_missing")
    return chosen.replace(tzinfo=ZoneInfo(subscriber.time_zone)).isoformat()


@blueprint.route("/c/<slug>", methods=["GET", "POST"])
def callback_form(slug: str) -> Response | tuple[str, int]:
    session = db_session()
    subscriber = intake.find_subscriber(session, slug)
    use_language(subscriber.language)
    form = CallbackForm()
    if request.method == "GET":
        form.page_url.data = request.args.get("from") or request.referrer or ""
        form.submission_id.data = uuid.uuid4().hex
    elif form.validate_on_submit():
        try:
            submitted = intake.submit(
                session,
                Submission(
                    subscriber=slug,
                    phone=form.phone.data or "",
                    name=form.name.data,
                    topic=form.topic.data,
                    when=_when(form, subscriber),
                    page_url=form.page_url.data or None,
                    idempotency_key=form.submission_id.data or None,
                ),
            )
        except CbError as error:
            field = getattr(form, FORM_FIELD.get(error.field or "", error.field or "phone"))
            field.errors = [*field.errors, error.message]
        else:
            request_stored(submitted.created)
            return redirect(status_url(submitted.request), code=303)
    status = 422 if form.errors else 200
    return render_template("form.html", form=form, subscriber=subscriber), status
