"""The visitor's status page ``/s/<id>?token=…``: live, with a cancel button."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response

from cbserver import intake
from cbserver.i18n import use_language
from cbserver.views.present import present, status_url
from cbserver.web import db_session

blueprint = Blueprint("status", __name__)


class CancelForm(FlaskForm):
    pass


@blueprint.get("/s/<request_id>")
def page(request_id: str) -> str:
    session = db_session()
    callback = intake.for_visitor(session, request_id, request.args.get("token"))
    use_language(callback.subscriber.language)
    return render_template(
        "status.html",
        callback=present(session, callback),
        token=callback.visitor_token,
        cancel_form=CancelForm(),
    )


@blueprint.post("/s/<request_id>/cancel")
def cancel(request_id: str) -> Response:
    session = db_session()
    callback = intake.for_visitor(session, request_id, request.form.get("token"))
    if CancelForm().validate_on_submit():
        intake.cancel(session, callback, "canceled by the visitor")
    return redirect(status_url(callback), code=303)
