"""The hosted form ``/c/<slug>``: what a business links to from its web page."""

from __future__ import annotations

import uuid

from flask import Blueprint, redirect, render_template, request
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import BooleanField, HiddenField, RadioField, StringField, TextAreaField

# types-WTForms lags WTForms 3.3, where SelectChoice replaced choice tuples.
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]
from wtforms.validators import DataRequired, InputRequired, Length, Optional

from cbserver import bots, captcha, intake, ratelimits
from cbserver.errors import CbError, Invalid
from cbserver.i18n import _, _l, use_language
from cbserver.intake import MAX_NAME, MAX_TOPIC, Submission
from cbserver.models import Subscriber
from cbserver.security import allow_framing, allow_sources
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
    consent = BooleanField(
        _l("I agree to be called at this number."),
        validators=[
            DataRequired(_l("Please tick the box to agree that we call you at this number."))
        ],
    )
    page_url = HiddenField()
    # Generated per form shown: a double-click or a resent form finds the same request.
    submission_id = HiddenField()
    # Bot checks (see bots.py): when the form was shown, signed; and a field people never see.
    form_token = HiddenField()
    website = StringField(
        _l("Leave this field empty"),
        render_kw={"tabindex": "-1", "autocomplete": "off"},
    )


# The intake service names fields as the API does; the form shows some of them elsewhere.
FORM_FIELD = {"when": "slot", "page_url": "phone", "subscriber": "phone", "idempotency_key": ""}


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
    allow_framing(subscriber.allowed_origin_list)
    check = captcha.public_settings(subscriber)
    if check is not None:
        for directive, sources in captcha.csp_sources(check["provider"]).items():
            allow_sources(directive, *sources)
    form = CallbackForm()
    status = 200
    notice: str | None = None
    if request.method == "GET":
        # Only a web address the intake would take: a hostile link's "from" never blocks the form.
        form.page_url.data = intake.usable_page_url(request.args.get("from") or request.referrer)
        form.submission_id.data = uuid.uuid4().hex
        form.form_token.data = bots.issue(subscriber)
    else:
        try:
            submitted = _submit(subscriber, form, check)
        except CbError as error:
            session.rollback()
            status = error.status
            notice = _show_error(form, error)
        else:
            if submitted is not None:
                request_stored(submitted.created)
                return redirect(status_url(submitted.request), code=303)
            status = 422
        _keep_form_token(form, subscriber)
    return render_template(
        "form.html",
        form=form,
        subscriber=subscriber,
        slots=slot_options(session, subscriber),
        closed=closed_note(subscriber),
        notice=notice,
        captcha=check,
    ), status


def _submit(
    subscriber: Subscriber, form: CallbackForm, check: dict[str, str] | None
) -> intake.Submitted | None:
    """The request the form asks for; None when a field is wrong (the form says which)."""
    ratelimits.check_submitter()
    if not form.validate_on_submit():
        return None
    with bots.checked(
        subscriber,
        honeypot=form.website.data,
        token=form.form_token.data,
        token_required=True,
        request_key=form.submission_id.data or None,
    ):
        if check is not None:
            captcha.verify(subscriber, request.form.get(check["field"]), ratelimits.client_ip())
        return intake.submit(
            db_session(),
            Submission(
                subscriber=subscriber.slug,
                phone=form.phone.data or "",
                name=form.name.data,
                topic=form.topic.data,
                when=chosen_when(form.when.data, form.slot.data),
                page_url=form.page_url.data or None,
                idempotency_key=form.submission_id.data or None,
                client=ratelimits.client_ip(),
                consent=bool(form.consent.data),
            ),
            now=now(),
            admit=ratelimits.admit,
        )


def _show_error(form: CallbackForm, error: CbError) -> str | None:
    """Put the message next to its field; what is about no field (a rate limit, a bot check,
    the CAPTCHA) is returned, to be shown above the form."""
    name = FORM_FIELD.get(error.field or "", error.field or "")
    field = form._fields.get(name) if name else None
    if field is None:
        return error.message
    field.errors = [*field.errors, error.message]
    return None


def _keep_form_token(form: CallbackForm, subscriber: Subscriber) -> None:
    """The form shown again keeps the time it was first shown, so a person who was just quick
    can send it again at once; a bot's made-up time, and a spent or expired token, are
    replaced. The hidden field is emptied."""
    if not bots.signed_here(subscriber, form.form_token.data):
        form.form_token.data = bots.issue(subscriber)
    form.website.data = ""
