"""Why a delivery attempt failed: the one table of reason codes and their words (pure, stdlib only).

Every surface reads it. The driver API accepts exactly these codes (`FailureReason`, in the OpenAPI
document) and the merchant API shows them on the timeline; the driver app offers the `label`s to choose
from; the recipient reads the `sentence` in the "failed" SMS and email ("we could not deliver your
parcel: nobody was at home") and on the tracking page. A code nobody knows reads as `other`.
Adding a language is adding a column to every row (a unit test checks the rows are complete).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class FailureReason(StrEnum):
    NOT_HOME = "not_home"
    NO_ACCESS = "no_access"
    REFUSED = "refused"
    DAMAGED = "damaged"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ReasonWords:
    label: str  # what the driver picks and the merchant reads: "Nobody home"
    sentence: str  # how the recipient is told, after "we could not deliver your parcel: "


R = FailureReason
FAILURE_REASONS: Mapping[FailureReason, Mapping[str, ReasonWords]] = {
    R.NOT_HOME: {"en": ReasonWords("Nobody home", "nobody was at home"),
                 "de": ReasonWords("Niemand zu Hause", "niemand war zu Hause")},
    R.NO_ACCESS: {"en": ReasonWords("No access to the address", "the driver could not get access"),
                  "de": ReasonWords("Kein Zugang zur Adresse", "der Fahrer hatte keinen Zugang")},
    R.REFUSED: {"en": ReasonWords("Refused by the recipient", "the parcel was refused"),
                "de": ReasonWords("Annahme verweigert", "die Annahme wurde verweigert")},
    R.DAMAGED: {"en": ReasonWords("Parcel damaged", "the parcel was damaged"),
                "de": ReasonWords("Sendung beschädigt", "das Paket war beschädigt")},
    R.OTHER: {"en": ReasonWords("Other", "the delivery could not be completed"),
              "de": ReasonWords("Anderer Grund", "die Zustellung war nicht möglich")},
}
LANGUAGES = ("en", "de")


def failure_reason(code: object) -> FailureReason:
    """The reason a stored code names; `other` for a missing or unknown one."""
    try:
        return FailureReason(str(code))
    except ValueError:
        return FailureReason.OTHER


def _words(code: object, locale: str | None) -> ReasonWords:
    lang = (locale or "").replace("_", "-").split("-")[0].lower()
    row = FAILURE_REASONS[failure_reason(code)]
    return row.get(lang) or row["en"]


def failure_reason_label(code: object, locale: str | None) -> str:
    """"Nobody home": the reason as a choice or a line of a list, in the language of `locale` (else English)."""
    return _words(code, locale).label


def failure_reason_text(code: object, locale: str | None) -> str:
    """"nobody was at home": the reason as the end of a sentence to the recipient (else English)."""
    return _words(code, locale).sentence
