"""The one entry to the recipient's messages: the stream, the schedules and the replay tool all call `notify`.

Sending is decided and done in `dispatch` (policy, templates, ledger, SNS/SES); this module builds what it needs
once per warm container (the ledger and the senders, loaded on the first event that may notify, so a cold
pipeline that only geofences never imports them) and reads the merchant through fleet's cached profile.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.core.config import get_settings
from chalicelib.fleet.service import cached_merchant_profile
from chalicelib.storage.repository import Repository

if TYPE_CHECKING:
    from chalicelib.notifications.dispatch import Outcome
    from chalicelib.notifications.ledger import Ledger
    from chalicelib.notifications.senders import Notifier

_parts: tuple[Ledger, Notifier] | None = None
_parts_lock = threading.Lock()


def notify(r: Repository, image: dict[str, Any], *, now: datetime | None = None,
           due_at: datetime | None = None, channel_only: str | None = None, replay: bool = False) -> list[Outcome]:
    """Send the recipient's messages for a lifecycle event, once per channel (the ledger's claim).

    A transient provider failure raises, so the stream retries the record. The scheduled functions (day-before
    reminders, release of deferred messages) come through here too, with `due_at` when a deferred message is
    released; the replay tool with `replay=True`. Returns the per-channel outcomes.
    """
    from chalicelib.notifications import dispatch

    if str(image.get("type")) not in dispatch.EVENT_KINDS:
        return []
    ledger, notifier = notify_parts(r)
    profile = cached_merchant_profile(r, str(image["merchant_id"]))
    policy, templates = dispatch.load_settings(profile.notifications_json)
    look = dispatch.merchant_look(profile.settings, profile.name, get_settings().email_sender)
    return dispatch.notify_for_event(r, ledger, notifier, get_settings(), image, look, now, policy=policy,
                                     templates=templates, due_at=due_at, channel_only=channel_only, replay=replay)


def notify_parts(r: Repository) -> tuple[Ledger, Notifier]:
    """The notification ledger and senders, built once per container."""
    global _parts
    with _parts_lock:  # the pipeline notifies from several threads: one ledger and one notifier all the same
        if _parts is None:
            from chalicelib.notifications.ledger import Ledger
            from chalicelib.notifications.senders import Notifier

            _parts = (Ledger(r.client), Notifier())
        return _parts
