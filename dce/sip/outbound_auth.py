"""Answering a callee's 401/407 to our INVITE (RFC 3261 §22.2-22.3): the credentials of a destination and the
INVITE that retries with them (same Call-ID and From tag, CSeq + 1, a new branch added by the endpoint)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dce.sip.digest import Algorithm, Challenge, authorization
from dce.sip.endpoint import new_token
from dce.sip.message import Request, Response, next_request

CHALLENGE_HEADERS = {401: ("WWW-Authenticate", "Authorization"), 407: ("Proxy-Authenticate", "Proxy-Authorization")}


@dataclass(frozen=True, slots=True)
class OutboundCredentials:
    """What we answer a destination's challenge with: a password, or HA1s (per algorithm) for one realm."""

    username: str
    password: str | None = field(default=None, repr=False)
    realm: str | None = None  # set with ``ha1``: the only realm the HA1s answer
    ha1: dict[Algorithm, str] = field(default_factory=dict, repr=False)

    def answer(self, challenge: Challenge, *, method: str, uri: str) -> str | None:
        """The Authorization value for ``challenge``, or None when these credentials cannot answer it."""
        if self.password is not None:
            return str(authorization(challenge, username=self.username, method=method, uri=uri,
                                     cnonce=new_token(), password=self.password))
        ha1 = self.ha1.get(challenge.algorithm)
        if ha1 is None or (self.realm is not None and challenge.realm != self.realm):
            return None
        return str(authorization(challenge, username=self.username, method=method, uri=uri, cnonce=new_token(),
                                 ha1_hex=ha1))


def authorized_retry(request: Request, response: Response, credentials: OutboundCredentials) -> Request | None:
    """The INVITE that answers ``response`` (a 401/407 to ``request``), or None when no challenge in it can be
    answered with ``credentials``. Our top Via is left out: the endpoint adds a new one (a new branch)."""
    names = CHALLENGE_HEADERS.get(response.status)
    if names is None:
        return None
    challenge_header, answer_header = names
    value: str | None = None
    for text in response.get_all(challenge_header):
        try:
            challenge = Challenge.parse(text)
        except ValueError:
            continue  # another scheme or algorithm: the next challenge may be one we speak
        value = credentials.answer(challenge, method=request.method, uri=request.uri)
        if value is not None:
            break
    if value is None:
        return None
    return next_request(request, replace={"Authorization": None, "Proxy-Authorization": None},
                        add=[(answer_header, value)])  # a previous answer is left out (one retry only, today)
