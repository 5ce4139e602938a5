"""The notifier adapter: SMS through SNS, email through SES. Sends one message; the caller owns the ledger.

Every failure comes back as a `SendFailed` carrying the domain's verdict
(`classify_provider_error`): retry, permanent, or unreachable (an opted-out
number, a suppressed address). The adapter never retries on its own beyond
botocore's standard mode, so the ledger sees every attempt.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from chalicelib.core.config import get_settings
from chalicelib.notifications.rules import ErrorVerdict, classify_provider_error


class SendFailed(Exception):
    def __init__(self, verdict: ErrorVerdict, detail: str) -> None:
        super().__init__(f"{verdict.code}: {detail}")
        self.verdict = verdict


@dataclass(frozen=True, slots=True)
class Sent:
    provider_id: str


class Notifier:
    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        # The stream pipeline sends from several threads; boto3's default session is not safe to create
        # clients from concurrently (the clients themselves are).
        self._lock = threading.Lock()

    def _client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:  # created on first use: a ping-only cold start never pays for these
            import boto3
            from botocore.config import Config

            s = get_settings()
            with self._lock:
                client = self._clients.get(service)
                if client is None:
                    client = self._clients[service] = boto3.client(
                        service, region_name=s.aws_region, endpoint_url=s.aws_endpoint_url,
                        config=Config(connect_timeout=2, read_timeout=5,
                                      retries={"max_attempts": 2, "mode": "standard"}))
        return client

    def send_sms(self, phone: str, text: str, sender_id: str | None = None) -> Sent:
        attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
        if sender_id:
            attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": sender_id[:11]}
        response = self._call("sns", "publish", PhoneNumber=phone, Message=text, MessageAttributes=attributes)
        return Sent(str(response.get("MessageId", "")))

    def send_email(self, sender: str, to: str, subject: str, text: str, html: str,
                   reply_to: str | None = None, headers: dict[str, str] | None = None) -> Sent:
        if headers:
            return self._send_raw_email(sender, to, subject, text, html, reply_to, headers)
        kwargs: dict[str, Any] = {
            "Source": sender, "Destination": {"ToAddresses": [to]},
            "Message": {"Subject": {"Data": subject, "Charset": "UTF-8"},
                        "Body": {"Text": {"Data": text, "Charset": "UTF-8"},
                                 "Html": {"Data": html, "Charset": "UTF-8"}}},
        }
        if reply_to:
            kwargs["ReplyToAddresses"] = [reply_to]
        response = self._call("ses", "send_email", **kwargs)
        return Sent(str(response.get("MessageId", "")))

    def _send_raw_email(self, sender: str, to: str, subject: str, text: str, html: str, reply_to: str | None,
                        headers: dict[str, str]) -> Sent:
        """SES SendRawEmail: the simple API drops headers such as List-Unsubscribe; a MIME message keeps them."""
        from email.message import EmailMessage
        from email.policy import SMTP

        # Lines up to SMTP's 998: a long List-Unsubscribe URL must stay one plain header, never an encoded word.
        message = EmailMessage(policy=SMTP.clone(max_line_length=998))
        message["Subject"] = subject
        message["From"] = sender
        message["To"] = to
        if reply_to:
            message["Reply-To"] = reply_to
        for name, value in headers.items():
            message[name] = value
        message.set_content(text, charset="utf-8")
        message.add_alternative(html, subtype="html", charset="utf-8")
        response = self._call("ses", "send_raw_email", Source=sender, Destinations=[to],
                              RawMessage={"Data": message.as_bytes()})
        return Sent(str(response.get("MessageId", "")))

    def _call(self, service: str, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

        try:
            return getattr(self._client(service), operation)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            verdict = classify_provider_error(error.get("Code"), status, message=error.get("Message"))
            raise SendFailed(verdict, str(error.get("Message", ""))) from exc
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise SendFailed(classify_provider_error(None, None, timed_out=True), str(exc)) from exc
        except BotoCoreError as exc:
            raise SendFailed(classify_provider_error(None, None), str(exc)) from exc
