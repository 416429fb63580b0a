"""The visitor's status page ``/s/<id>?token=…``: live, with a cancel button."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request
from flask_wtf import FlaskForm
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from cbserver import intake
from cbserver.errors import CbError
from cbserver.i18n import _, use_language
from cbserver.models import CallbackRequest
from cbserver.security import allow_framing
from cbserver.views.form import chosen_when
from cbserver.views.present import present, slot_options, status_url
from cbserver.web import db_session, now, request_stored

blueprint = Blueprint("status", __name__)


class CancelForm(FlaskForm):
    pass


def _page(session: Session, callback: CallbackRequest, error: str | None = None) -> str:
    # The hosted form leads here: where the subscriber lets it be framed, this page may be too.
    allow_framing(callback.subscriber.allowed_origin_list)
    return render_template(
        "status.html",
        callback=present(session, callback),
        token=callback.visitor_token,
        cancel_form=CancelForm(),
        slots=slot_options(session, callback.subscriber),
        reschedule_error=error,
    )


@blueprint.get("/s/<request_id>")
def page(request_id: str) -> str:
    session = db_session()
    callback = intake.for_visitor(session, request_id, request.args.get("token"))
    use_language(callback.subscriber.language)
    return _page(session, callback)


@blueprint.post("/s/<request_id>/reschedule")
def reschedule(request_id: str) -> Response | tuple[str, int]:
    session = db_session()
    callback = intake.for_visitor(session, request_id, request.form.get("token"))
    use_language(callback.subscriber.language)
    if not CancelForm().validate_on_submit():
        return _page(session, callback, _("This page had expired. Please try again.")), 400
    try:
        when = chosen_when(request.form.get("when"), request.form.get("slot"))
        intake.reschedule(session, callback, when, "moved by the visitor", now=now())
    except CbError as error:
        session.rollback()
        return _page(session, callback, error.message), error.status
    request_stored(True)
    return redirect(status_url(callback), code=303)


@blueprint.post("/s/<request_id>/cancel")
def cancel(request_id: str) -> Response | tuple[str, int]:
    session = db_session()
    callback = intake.for_visitor(session, request_id, request.form.get("token"))
    use_language(callback.subscriber.language)
    if not CancelForm().validate_on_submit():
        return _page(session, callback, _("This page had expired. Please try again.")), 400
    intake.cancel(session, callback, "canceled by the visitor")
    return redirect(status_url(callback), code=303)
