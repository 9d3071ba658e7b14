"""Email over SMTP with the standard library: one connection per batch of messages.

``MAIL_SERVER`` unset means email is off; callers ask :func:`enabled` first so nothing is
queued that could never be sent.
"""
from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from flask import current_app

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mail:
    """One plain-text message to one recipient."""

    to: str
    subject: str
    body: str


def enabled() -> bool:
    """True when an SMTP server is configured."""
    return bool(current_app.config.get("MAIL_SERVER"))


def _message(mail: Mail, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = mail.to
    # Header injection: a title with a newline must not become a new header.
    msg["Subject"] = " ".join(mail.subject.split())[:255]
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain="episode-control")
    msg.set_content(mail.body)
    return msg


def _connect() -> smtplib.SMTP:
    config = current_app.config
    host, port = config["MAIL_SERVER"], config["MAIL_PORT"]
    timeout = config.get("MAIL_TIMEOUT_SECONDS", 10)
    if config.get("MAIL_USE_SSL"):
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout)
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
        if config.get("MAIL_USE_TLS"):
            smtp.starttls()
    if config.get("MAIL_USERNAME"):
        smtp.login(config["MAIL_USERNAME"], config.get("MAIL_PASSWORD") or "")
    return smtp


def send(mails: Iterable[Mail]) -> int:
    """Send every message over one SMTP connection; returns how many the server accepted.

    A recipient the server refuses is logged and skipped; a connection failure raises so
    the calling task can retry.
    """
    mails = list(mails)
    if not mails or not enabled():
        return 0
    sender = current_app.config["MAIL_FROM"]
    sent = 0
    smtp = _connect()
    try:
        for mail in mails:
            try:
                smtp.send_message(_message(mail, sender))
                sent += 1
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as exc:
                log.warning("mail to %s refused: %s", mail.to, exc)
    finally:
        try:
            smtp.quit()
        except smtplib.SMTPException:
            smtp.close()
    return sent
