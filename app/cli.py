"""Flask CLI: ``flask --app wsgi users create-admin EMAIL --password PW``."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from app.demo import fill
from app.errors import DomainError
from app.services.users import create_or_promote_admin

users_cli = AppGroup("users", help="Manage users.")


@users_cli.command("create-admin")
@click.argument("email")
@click.option("--password", default=None, help="Password (required for a new user).")
@click.option("--name", default=None, help="Display name for a new user.")
def create_admin(email: str, password: str | None, name: str | None) -> None:
    """Create an admin, or promote an existing user to admin."""

    try:
        user = create_or_promote_admin(email, password, name)
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{user.email} is an admin (id {user.id})")


@click.command("demo")
@with_appcontext
@click.option("--password", default="demo-password", show_default=True,
              help="Password of every demo account.")
def demo(password: str) -> None:
    """Fill this instance with example users, episodes, files, jobs and notifications."""

    try:
        summary = fill(password)
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"Demo data: {summary.episodes} episodes, {summary.files} files, {summary.jobs} jobs, "
               f"{summary.notifications} notifications. Sign in at / with (password {summary.password!r}):")
    for name, email, role in summary.users:
        click.echo(f"  {role:<7} {email:<24} {name}")


def register_cli(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(demo)
