"""The WSGI entry point for production servers: ``gunicorn cbserver.wsgi:app``."""

from cbserver.web import create_app

app = create_app()
