"""The hosted form ``/c/<slug>``: what a business links to from its web page."""

from __future__ import annotations

import uuid

from flask import Blueprint, redirect, render_template, request
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import HiddenField, RadioField, StringField, TextAreaField

# types-WTForms lags WTForms 3.3, where SelectChoice replaced choice tuples.
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]
from wtforms.validators import InputRequired, Length, Optional

from cbserver import intake
from cbserver.errors import CbError, Invalid
from cbserver.i18n import _, _l, use_language
from cbserver.intake import MAX_NAME, MAX_TOPIC, Submission
from cbserver.views.present import closed_note, slot_options, status_url
from cbserver.web import db_session, now, request_stored

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
            SelectChoice("slot", _l("At a time I choose")),
        ],
        default="asap",
    )
    # Offered as a select of the bookable slots (see slot_picker in _field.html).
    slot = StringField(_l("Time"), validators=[Optional()])
    page_url = HiddenField()
    # Generated per form shown: a double-click or a resent form finds the same request.
    submission_id = HiddenField()


# The intake service names fields as the API does; the form shows some of them elsewhere.
FORM_FIELD = {"when": "slot", "page_url": "phone", "subscriber": "phone"}


def chosen_when(when: str | None, slot: str | None) -> str:
    """What a form's "when" choice asks the intake service for: "asap" or a slot's start."""
    if when != "slot":
        return "asap"
    if not slot:
        raise Invalid(_("Please choose a time."), field="when", code="time_missing")
    return slot


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
                    when=chosen_when(form.when.data, form.slot.data),
                    page_url=form.page_url.data or None,
                    idempotency_key=form.submission_id.data or None,
                ),
                now=now(),
            )
        except CbError as error:
            session.rollback()
            field = getattr(form, FORM_FIELD.get(error.field or "", error.field or "phone"))
            field.errors = [*field.errors, error.message]
        else:
            request_stored(submitted.created)
            return redirect(status_url(submitted.request), code=303)
    status = 422 if form.errors else 200
    return render_template(
        "form.html",
        form=form,
        subscriber=subscriber,
        slots=slot_options(session, subscriber),
        closed=closed_note(subscriber),
    ), status
