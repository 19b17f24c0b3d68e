"""SIP dialogs (RFC 3261 §12): identity, route set, remote target and CSeq bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field

from dce.sip.message import Request, Response, header_uri, uri_hostport
from dce.sip.session_timer import SessionTimer
from dce.sip.transaction import Address


@dataclass(slots=True)
class Dialog:
    """One side of a dialog as seen by the local UA (either leg of the B2BUA)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str  # our From value (with tag) for requests we send in this dialog
    remote_party: str  # their To value (with tag) for requests we send
    remote_target: str  # Contact URI of the peer
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None
    transport: str = "udp"
    flow: Address | None = None  # for stream transports: the connection the dialog arrived on
    # The session on this dialog (RFC 4028 and RFC 3264), kept so a refresh can be sent or answered locally.
    session: SessionTimer | None = None  # its session timer, once confirmed
    peer_allows_update: bool = False  # the peer listed UPDATE in Allow: we refresh with it rather than re-INVITE
    peer_supports_timer: bool = False  # the peer listed timer in Supported/Require
    local_sdp: bytes = b""  # the last session description we sent the peer
    remote_sdp: bytes = b""  # the last one the peer sent us

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag)."""
        return self.call_id, self.local_tag, self.remote_tag

    @classmethod
    def as_uas(cls, request: Request, local_tag: str, transport: str, flow: Address) -> Dialog:
        """The dialog a UAS creates when it answers ``request`` with a 2xx (§12.1.1)."""
        to_value = request.get("To") or ""
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag or "",
            local_party=to_value if ";tag=" in to_value else f"{to_value};tag={local_tag}",
            remote_party=request.get("From") or "",
            remote_target=header_uri(request.get("Contact") or request.get("From") or ""),
            route_set=[v for v in request.get_all("Record-Route")],
            local_cseq=0,
            remote_cseq=request.cseq[0],
            transport=transport,
            flow=flow if transport != "udp" else None,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response, transport: str, flow: Address) -> Dialog:
        """The dialog a UAC creates from a 2xx (or 1xx with To tag) to its INVITE (§12.1.2)."""
        return cls(
            call_id=request.call_id,
            local_tag=request.from_tag or "",
            remote_tag=response.to_tag or "",
            local_party=request.get("From") or "",
            remote_party=response.get("To") or "",
            remote_target=header_uri(response.get("Contact") or request.uri),
            route_set=list(reversed(response.get_all("Record-Route"))),
            local_cseq=request.cseq[0],
            remote_cseq=None,
            transport=transport,
            flow=flow if transport != "udp" else None,
        )

    def create_request(self, method: str, *, contact: str | None = None, cseq: int | None = None) -> Request:
        """A new in-dialog request with the next CSeq (ACK and CANCEL pass their own ``cseq``)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        uri, routes = self._request_uri_and_routes()
        request = Request(method=method, uri=uri)
        headers = request.headers
        headers.extend(("Route", route) for route in routes)
        headers.append(("From", self.local_party))
        headers.append(("To", self.remote_party))
        headers.append(("Call-ID", self.call_id))
        headers.append(("CSeq", f"{cseq} {method}"))
        if contact is not None:
            headers.append(("Contact", contact))
        return request

    def next_hop(self) -> tuple[str, Address]:
        """Transport and address for in-dialog requests: the stream flow, else first route or remote target."""
        if self.flow is not None:
            return self.transport, self.flow
        target = header_uri(self.route_set[0]) if self.route_set else self.remote_target
        host, port, params = uri_hostport(target)
        if target[:5].lower() == "sips:":
            transport = "tls"
        else:
            transport = (params.get("transport") or self.transport or "udp").lower()
        return transport, (host.strip("[]"), port or (5061 if transport == "tls" else 5060))

    def accept_remote_cseq(self, request: Request) -> bool:
        """Check and record the CSeq of an in-dialog request (§12.2.2): lower than the last -> reject (500)."""
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def update_target(self, message: Request | Response) -> None:
        """A target refresh (re-INVITE, UPDATE, or their 2xx) replaces the remote target."""
        contact = message.get("Contact")
        if contact:
            self.remote_target = header_uri(contact)

    def learn_peer(self, message: Request | Response) -> None:
        """Note what the peer said it allows and supports (its INVITE, its 2xx, or a target refresh)."""
        allow = message.get_all("Allow")
        if allow:
            self.peer_allows_update = any(m.strip().upper() == "UPDATE" for m in allow)
        options = [o.strip().lower() for o in (*message.get_all("Supported"), *message.get_all("Require"))]
        if options:
            self.peer_supports_timer = "timer" in options

    def is_same_session(self, sdp: bytes) -> bool:
        """Whether ``sdp`` from the peer changes nothing: no body, or the very bytes it sent last. Such a
        re-INVITE/UPDATE is a session refresh (RFC 4028), not a new offer. Byte equality rather than an unchanged
        ``o=`` version (RFC 3264 §8): a peer that changes its SDP without bumping the version is still relayed."""
        return not sdp or sdp == self.remote_sdp

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = header_uri(self.route_set[0])
        if ";lr" in first:
            return self.remote_target, list(self.route_set)
        # strict router (§12.2.1.1): its URI becomes the Request-URI, the remote target goes last
        return first, [*self.route_set[1:], f"<{self.remote_target}>"]

