"""``deidentify`` on a peer: every instance sent to it is de-identified on the way out (PS3.15 Annex E).

Written as a table under the peer (or inline, ``deidentify = { ... }``)::

    [[peers]]
    name = "research"
    ae_title = "RESEARCH"
    host = "10.2.3.4"
    port = 104
    [peers.deidentify]
    salt = "a long random secret of this node"   # required; `openssl rand -hex 16` makes one
    uids = "remap"                                # or "retain"
    dates = "shift"                               # or "remove" (the default) or "retain"
    max_shift_days = 365                          # with dates = "shift" only
    pseudonym_prefix = "ANON-"

What each key does is in :mod:`node.send.deidentify`; this module only checks the values.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import SecretStr

from node.config.base import Loc, _between, _check, _Section

__all__ = ["Deidentify"]

MIN_SALT = 16
_SALT = f"must have at least {MIN_SALT} characters (a secret of this node: `openssl rand -hex 16` makes one)"
_PREFIX = "must be 0..16 of A-Z, a-z, 0-9, '-', '_', '.'"


def _long_enough(value: SecretStr) -> bool:
    secret = value.get_secret_value()
    return len(secret) >= MIN_SALT and secret.strip() == secret


class Deidentify(_Section):
    """``peers.N.deidentify``: the Basic Application Level Confidentiality Profile and its options.

    Attributes
    ----------
    profile
        ``"basic"``: PS3.15 Table E.1-1, Basic Profile column (the only profile so far).
    uids
        ``"remap"``: instance UIDs replaced by UIDs derived from the original and the salt (the same
        original gives the same new UID on every send and after restarts); ``"retain"``: Retain UIDs Option.
    dates
        ``"remove"``: the profile's own actions (dates and times emptied, replaced by dummies or removed);
        ``"shift"``: Retain Longitudinal Temporal Information with Modified Dates Option, dates moved back
        by 1..``max_shift_days`` days, the same number for every instance of a patient; ``"retain"``: the
        Full Dates Option. Patient's Birth Date is emptied under every choice.
    max_shift_days
        The largest shift of ``dates = "shift"``, in days.
    salt
        The secret that pseudonyms, new UIDs and date shifts are derived from: the same salt gives the
        same results, another salt others. Keep it secret and keep it: a new salt makes new pseudonyms.
    pseudonym_prefix
        Put before the pseudonym that replaces Patient ID and Patient's Name.
    """

    profile: Literal["basic"] = "basic"
    uids: Literal["remap", "retain"] = "remap"
    dates: Literal["remove", "shift", "retain"] = "remove"
    max_shift_days: Annotated[int, _between(1, 36500)] = 365
    salt: Annotated[SecretStr, _check(_long_enough, _SALT)]
    pseudonym_prefix: Annotated[str, _check(lambda v: re.fullmatch(r"[A-Za-z0-9._-]{0,16}", v), _PREFIX)] = "ANON-"

    def _relations(self) -> list[tuple[Loc, str]]:
        if "max_shift_days" in self.model_fields_set and self.dates != "shift":
            return [(("max_shift_days",), f"applies only with dates = 'shift' (dates is '{self.dates}')")]
        return []
