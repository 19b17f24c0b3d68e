"""The registrar from settings (``sip.registrar``, the admission's nonce signer and realm), and its bindings as the
API shows them (``GET /api/v1/agents/{id}/registrations``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dce.clock import Clock
from dce.exchange.config import SipConfig
from dce.sip.digest import NonceSigner
from dce.sip.registrar import Registrar, RegistrarSettings


def build_registrar(sip: SipConfig, signer: NonceSigner, *,
                    on_auth_failure: Callable[[str, float], None] | None = None,
                    on_outcome: Callable[[str], None] | None = None) -> Registrar:
    """A registrar challenging with ``sip.auth_realm`` and the admission's nonces (any node verifies them)."""
    config = sip.registrar
    settings = RegistrarSettings(realm=sip.auth_realm, default_expires=config.default_expires_s,
                                 min_expires=config.min_expires_s, max_expires=config.max_expires_s,
                                 max_bindings=config.max_devices, algorithms=tuple(config.algorithms))
    return Registrar(signer, settings, on_auth_failure=on_auth_failure, on_outcome=on_outcome)


def registrations(registrar: Registrar, clock: Clock, agent_id: str) -> list[dict[str, Any]]:
    """The agent's bindings now, as JSON (``expires_at`` on the wall clock)."""
    now = clock.monotonic()
    return [{"uri": b.uri, "source": b.source, "transport": b.transport, "expires_in": b.expires_in(now),
             "expires_at": clock.wall(b.expires_at).isoformat(), "q": b.q, "user_agent": b.user_agent,
             "call_id": b.call_id} for b in registrar.bindings(agent_id, now)]
