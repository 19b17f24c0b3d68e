"""Exchange configuration: defaults < YAML file < ``DCE_`` environment < explicit overrides.

Environment variables use ``DCE_`` and ``__`` for nesting (``DCE_SIP__PUBLIC_ADDRESS``,
``DCE_MEDIA__MODE``); list and dict values are JSON (``DCE_SIP__LISTEN='["udp:0.0.0.0:5060"]'``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from contextvars import ContextVar
from datetime import time as dt_time
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)
from sipmessage import URI

from dce.media.ng import NgInstance, parse_instance

_TRANSPORTS = ("udp", "tcp", "tls")
_TLS_DEFAULT_PORT = 5061  # a tls: listener without a port
_DEFAULT_REGION = "US"

# The YAML file of the load_settings() call in progress (read by Settings.settings_customise_sources).
_yaml_file: ContextVar[Path | None] = ContextVar("dce_config_yaml_file", default=None)


class ConfigError(Exception):
    """A configuration problem, naming the dotted key (or the file) at fault."""

    def __init__(self, key: str, message: str, *, file: Path | None = None) -> None:
        self.key = key
        self.message = message
        self.file = file
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.key:
            return f"config key {self.key!r}: {self.message}"
        return f"config file '{self.file}': {self.message}"


def _split_host_port(value: str) -> tuple[str, int]:
    """Parse ``host:port`` (``[v6]:port`` for IPv6) and check the port range."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError(f"empty host in {value!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be an integer 1-65535, got {port_text!r}")
    return host, int(port_text)


def _parse_endpoint(value: str) -> tuple[str, str, int]:
    """Parse ``udp|tcp|tls:host:port`` (``[v6]`` hosts bracketed; ``tls:host`` is port 5061) into
    ``(transport, host, port)``."""
    transport, sep, rest = value.partition(":")
    transport = transport.lower()
    if not sep or transport not in _TRANSPORTS:
        raise ValueError(f"expected udp:host:port, tcp:host:port or tls:host:port, got {value!r}")
    if transport == "tls" and (rest.endswith("]") or ":" not in rest):
        rest = f"{rest}:{_TLS_DEFAULT_PORT}"
    host, port = _split_host_port(rest)
    return transport, host, port


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StaticTrunkConfig(_Section):
    """An inbound trunk named in the config file (``sip.trunks``); its password is hashed (HA1) at load."""

    name: str = Field(min_length=1, max_length=64)
    networks: list[str] = Field(min_length=1)  # source CIDRs (IPv4/IPv6); a bare address is a /32 or /128
    publisher_id: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    realm: str | None = None  # default: sip.auth_realm
    # Digest algorithms challenged with, strongest first (RFC 8760); only their HA1s are kept. A UA that reads
    # only the first challenge and speaks only MD5 (SIPp 3.6) needs ["MD5"].
    algorithms: list[Literal["SHA-256", "MD5"]] = Field(default_factory=lambda: ["SHA-256", "MD5"], min_length=1)
    transport: Literal["udp", "tcp", "tls"] | None = None  # only INVITEs arriving over it match
    max_cps: float = Field(0, ge=0)  # new calls a second (token bucket); 0 = unlimited
    max_concurrent: int = Field(0, ge=0)  # calls up at once; 0 = unlimited

    @field_validator("networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return value

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> StaticTrunkConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class FloodConfig(_Section):
    """Per-source flood limits and bans at the SIP edge (README "Edge"), in the style of Kamailio's pike."""

    enabled: bool = True
    requests_per_window: int = Field(200, ge=1)  # requests from one IP per window; more bans it
    window_s: float = Field(2.0, gt=0)
    ban_s: float = Field(300.0, gt=0)  # how long a banned source is dropped silently
    strikes_to_ban: int = Field(5, ge=1)  # other offences (wrong digest password, ...) within strike_window_s
    strike_window_s: float = Field(600.0, gt=0)
    max_sources: int = Field(65536, ge=1)  # sources tracked at most (windows, strikes and bans each)
    trusted: list[str] = Field(default_factory=list)  # CIDRs never banned (counted, but never dropped)

    @field_validator("trusted")
    @classmethod
    def _check_trusted(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not an IP network (e.g. 192.0.2.0/24)") from exc
        return value


class SipDnsConfig(_Section):
    """RFC 3263 resolution of destinations by name (README "Buyers reached by name")."""

    enabled: bool = True  # false: a destination's host must be an IP address
    nameservers: list[str] = Field(default_factory=list)  # "ip[:port]"; empty: the system's resolv.conf
    timeout_s: float = Field(2.0, gt=0)  # one query to one server
    lifetime_s: float = Field(4.0, gt=0)  # one lookup in all (every server, every retry)
    cache_size: int = Field(10_000, ge=1)  # names remembered (LRU)
    max_ttl_s: float = Field(3600.0, gt=0)  # a longer TTL is cut to this
    negative_ttl_s: float = Field(30.0, ge=0)  # a name that did not resolve is not asked again for this long
    ipv6: bool = True  # look up AAAA too (tried after the A addresses)


class SipTlsConfig(_Section):
    """SIP over TLS (README "TLS"): our certificate, whom we trust, and how connections are kept."""

    cert_file: Path | None = None  # PEM certificate chain a tls: listener presents (and our client certificate)
    key_file: Path | None = None  # its private key (PEM)
    client_ca_file: Path | None = None  # CAs that sign the client certificates of mutual TLS peers
    verify_clients: bool = False  # mutual TLS: a peer connecting to a tls: listener must present a certificate
    ca_file: Path | None = None  # CAs trusted for sips:/transport=tls destinations; None: the system's
    verify_server: bool = True  # false only by explicit choice: destinations' certificates are not checked

    @model_validator(mode="after")
    def _check_files(self) -> SipTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.verify_clients and self.client_ca_file is None:
            raise ValueError("verify_clients needs client_ca_file (the CAs client certificates must chain to)")
        return self


class SipWebSocketConfig(_Section):
    """SIP over WebSocket (RFC 7118) on the side API's listener at ``/ws/sip`` (README "SIP over WebSocket")."""

    enabled: bool = True  # false: /ws/sip is not served
    max_connections: int = Field(2048, ge=1)  # open SIP WebSockets in all
    max_connections_per_source: int = Field(256, ge=1)  # from one IP address (agents behind one NAT share it)
    first_message_timeout_s: float = Field(10, gt=0)  # a new connection must send a SIP message within this
    idle_timeout_s: float = Field(7500, gt=0)  # no SIP message from the peer this long: closed (its bindings go)
    ping_interval_s: float = Field(30, gt=0)  # WebSocket ping this often; no pong within half of it: closed


class RegistrarConfig(_Section):
    """REGISTER of buyers' agents (the agents API): binding lifetimes in seconds, and devices per agent."""

    default_expires_s: int = Field(3600, ge=1, le=86400)  # a Contact with no expires (nor Expires header)
    min_expires_s: int = Field(60, ge=1, le=86400)  # a shorter one gets 423 with Min-Expires
    max_expires_s: int = Field(7200, ge=1, le=86400)  # a longer one is cut to this
    max_devices: int = Field(10, ge=1, le=1000)  # bindings one agent may hold at once
    algorithms: list[Literal["SHA-256", "MD5"]] = Field(default_factory=lambda: ["SHA-256", "MD5"], min_length=1)

    @model_validator(mode="after")
    def _check_expiries(self) -> RegistrarConfig:
        if not self.min_expires_s <= self.default_expires_s <= self.max_expires_s:
            raise ValueError("need min_expires_s <= default_expires_s <= max_expires_s")
        return self


class SipConfig(_Section):
    """SIP listeners, identity and RFC 3261 timer values."""

    # NoDecode: the environment may give a JSON array or a plain comma-separated list
    listen: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"], min_length=1
    )
    public_address: str | None = None
    t1_ms: int = Field(500, gt=0)
    t2_ms: int = Field(4000, gt=0)
    t4_ms: int = Field(5000, gt=0)
    # An outbound INVITE that hears nothing (not even 100 Trying) this long is given up and the next SRV hop tried
    # (Kamailio's fr_timer); keep it well under a target's ring timeout. 0: only timer B (64*T1) gives up.
    no_response_timeout_s: float = Field(5.0, ge=0)
    user_agent: str = "dce"  # Server/User-Agent header of SIP and outgoing HTTP: no version by default
    # The edge's bounds (README "Edge limits"): what one peer, or all of them, may hold.
    max_message_bytes: int = Field(65535, ge=1024, le=65535)  # one message, headers and body (TCP framing)
    tcp_idle_timeout_s: float = Field(600, gt=0)  # no byte either way for this long: the connection is closed
    tcp_header_timeout_s: float = Field(10, gt=0)  # a message must be complete this long after it starts
    tcp_max_connections: int = Field(2048, ge=1)  # accepted TCP connections in all
    tcp_max_connections_per_source: int = Field(128, ge=1)  # accepted TCP connections from one IP address
    tcp_keepalive_s: float = Field(30, ge=0)  # CRLF ping on our outbound TCP/TLS connections this often; 0 = off
    tcp_keepalive_timeout_s: float = Field(10, gt=0)  # no pong this long after a ping: the connection is closed
    max_calls_per_source: int = Field(0, ge=0)  # inbound calls up at once from one IP address; 0 = unlimited
    source_retry_after_s: int = Field(5, ge=1, le=3600)  # Retry-After of the 503 over max_calls_per_source
    # Admission by trunk (README "Inbound trunks"): who may send INVITEs, digest challenges, per-trunk limits.
    unknown_sources: Literal["reject", "allow"] = "reject"  # an INVITE from no trunk's network: 403, or let in
    auth_realm: str = Field("dce", min_length=1)  # digest realm of trunks that name none
    nonce_secret: SecretStr | None = None  # HMAC key of digest nonces (>= 16 bytes); unset: from auth.secret
    nonce_lifetime_s: float = Field(300, gt=0)  # an older nonce is answered 401 stale=true
    trunks: list[StaticTrunkConfig] = Field(default_factory=list)  # merged with the trunks table (these first)
    flood: FloodConfig = Field(default_factory=FloodConfig)  # per-source request limits, bans, scanner drops
    dns: SipDnsConfig = Field(default_factory=SipDnsConfig)
    tls: SipTlsConfig = Field(default_factory=SipTlsConfig)
    registrar: RegistrarConfig = Field(default_factory=RegistrarConfig)
    websocket: SipWebSocketConfig = Field(default_factory=SipWebSocketConfig)
    # RFC 4028 session timers on both legs (README "Session timers and call limits"). min_se_s below 90 is
    # for tests only: RFC 4028 forbids a Min-SE under 90 s on the wire.
    session_timers: bool = True  # false: no Session-Expires offered or answered; Require: timer gets 420
    session_expires_s: int = Field(1800, ge=1, le=86400)  # the interval we offer the buyer and accept at most
    min_se_s: int = Field(90, ge=1, le=86400)  # the smallest interval we accept (422 below it)

    @model_validator(mode="after")
    def _check_session_timers(self) -> SipConfig:
        if self.min_se_s > self.session_expires_s:
            raise ValueError(f"sip.min_se_s ({self.min_se_s}) exceeds sip.session_expires_s "
                             f"({self.session_expires_s})")
        return self

    @field_validator("listen", mode="before")
    @classmethod
    def _split_listen(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: list[str]) -> list[str]:
        if not any(_parse_endpoint(item)[0] == "udp" for item in value):
            raise ValueError("at least one udp: address is required (e.g. udp:0.0.0.0:5060)")
        return value

    @model_validator(mode="after")
    def _check_tls_listener(self) -> SipConfig:
        if any(kind == "tls" for kind, _, _ in self.endpoints()) and self.tls.cert_file is None:
            raise ValueError("a tls: listener needs sip.tls.cert_file and sip.tls.key_file")
        return self

    def endpoints(self) -> list[tuple[str, str, int]]:
        """The listeners as ``(transport, host, port)`` tuples."""
        return [_parse_endpoint(item) for item in self.listen]

    @field_validator("nonce_secret")
    @classmethod
    def _check_nonce_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("at least 16 bytes")
        return value

    @field_validator("trunks")
    @classmethod
    def _unique_trunks(cls, value: list[StaticTrunkConfig]) -> list[StaticTrunkConfig]:
        names = [trunk.name for trunk in value]
        if len(set(names)) != len(names):
            raise ValueError("trunk names must be unique")
        return value


class HttpCacheConfig(_Section):
    """Lifetimes (seconds) of the side API's read caches (``http_api.read_cache``); 0 turns one off."""

    marketplace_s: float = Field(1.0, ge=0, le=3600)  # marketplace reads: also dropped by every write on this node
    calls_s: float = Field(1.0, ge=0, le=3600)  # /calls, /bids and /reports/calls pages: also dropped by CDR writes
    reports_s: float = Field(5.0, ge=0, le=3600)  # report summaries


class HttpTlsConfig(_Section):
    """HTTPS on the side API's listener (TLS 1.2+; SIP over WebSocket becomes ``wss``)."""

    cert_file: Path | None = None  # PEM certificate chain; set with key_file: the listener speaks HTTPS only
    key_file: Path | None = None  # its private key (PEM)

    @model_validator(mode="after")
    def _check_files(self) -> HttpTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class HttpConfig(_Section):
    """The side API listener."""

    listen: str = "127.0.0.1:8080"
    tls: HttpTlsConfig = Field(default_factory=HttpTlsConfig)
    cors_origins: list[str] = Field(default_factory=list)  # browser origins allowed to call the API (CORS)
    cache: HttpCacheConfig = Field(default_factory=HttpCacheConfig)
    metrics_cache_s: float = Field(1.0, ge=0)  # /metrics is rendered at most once per this many seconds
    metrics_token: SecretStr | None = None  # set: /metrics wants "Authorization: Bearer <token>"

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"CORS origin {origin!r} is not scheme://host[:port] (or *)")
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _split_host_port(value)
        return value

    @property
    def host(self) -> str:
        """The host part of ``listen``."""
        return _split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        """The port part of ``listen``."""
        return _split_host_port(self.listen)[1]


_PORT_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class MediaConfig(_Section):
    """Media plane: relay, passthrough or rtpengine; RTP port range and the address advertised in SDP (relay);
    the rtpengine instances' ng addresses (``udp:HOST:PORT[=WEIGHT]``) and the ng timeouts (rtpengine)."""

    mode: Literal["relay", "passthrough", "rtpengine"] = "relay"
    rtpengine: list[str] = []  # ng control addresses; weight (default 1): share of new calls
    rtpengine_timeout_s: float = Field(1.0, gt=0)  # per instance, before the next one is tried (or the call fails)
    rtpengine_retransmit_s: float = Field(0.25, gt=0)  # resend a request not answered after this
    rtpengine_down_s: float = Field(10.0, ge=0)  # an instance that timed out gets no new calls for this long
    # RTP on even ports, RTCP on the odd one above; below Linux's ephemeral range (32768-60999), where the
    # kernel picks client ports (a relay port taken by an outgoing connection cannot be bound). Checked at start.
    ports: str = "16384-32767"
    rtp_timeout_s: float = Field(60, gt=0)
    address: str | None = None  # IP advertised in SDP; None -> the SIP listen host

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, value: str) -> str:
        match = _PORT_RANGE.match(value)
        if match is None:
            raise ValueError(f"expected LOW-HIGH, got {value!r}")
        low, high = int(match[1]), int(match[2])
        if not 1024 <= low < high <= 65535:
            raise ValueError(f"need 1024 <= low < high <= 65535, got {low}-{high}")
        return f"{low}-{high}"

    @field_validator("rtpengine")
    @classmethod
    def _check_rtpengine(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_instance(item)  # ValueError: "expected udp:HOST:PORT or udp:HOST:PORT=WEIGHT, got ..."
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> MediaConfig:
        if self.mode == "rtpengine" and not self.rtpengine:
            raise ValueError("media.mode rtpengine needs media.rtpengine: a list of udp:HOST:PORT ng addresses")
        if self.rtpengine_retransmit_s > self.rtpengine_timeout_s:
            raise ValueError("media.rtpengine_retransmit_s must not exceed media.rtpengine_timeout_s")
        return self

    @property
    def rtpengine_instances(self) -> list[NgInstance]:
        """``rtpengine`` parsed."""
        return [parse_instance(item) for item in self.rtpengine]

    @property
    def port_range(self) -> tuple[int, int]:
        """``(low, high)`` of the RTP port range, inclusive."""
        low, high = self.ports.split("-")
        return int(low), int(high)


class DatabaseConfig(_Section):
    """Storage URL (SQLAlchemy async), timeouts, and the record writers' batching, queue bound and spool."""

    url: str = "sqlite+aiosqlite:///./dce.db"
    batch_size: int = Field(200, gt=0)
    flush_interval_s: float = Field(0.2, gt=0)
    # CDRs past queue_limit, and those unwritten at shutdown, wait here (fsynced) and are read back when the
    # database takes them; bids use "<spool_path>.bids"
    spool_path: str = "./dce-cdr-spool.jsonl"
    queue_limit: int = Field(10_000, gt=0)  # records held in memory per writer before spilling to the spool
    connect_timeout_s: float = Field(5.0, gt=0)  # opening a connection
    statement_timeout_s: float = Field(15.0, gt=0)  # every statement (server-side on PostgreSQL) and every write
    stall_after_s: float = Field(30.0, gt=0)  # records waiting this long with none written: not ready

    @model_validator(mode="after")
    def _check_queue(self) -> DatabaseConfig:
        if self.queue_limit < self.batch_size:
            raise ValueError("database.queue_limit must be at least database.batch_size")
        return self


class RoutingConfig(_Section):
    """Call routing knobs."""

    ring_timeout_s: float = Field(30, gt=0)
    outbound_trunk: str | None = None  # sip: URI that E.164 destinations are dialled through
    max_call_duration_s: float = Field(14400, gt=0)  # answered calls are hung up after this (campaigns may set less)

    @field_validator("outbound_trunk")
    @classmethod
    def _check_trunk(cls, value: str | None) -> str | None:
        return None if value is None else _check_sip_uri(value)


class CallingHoursConfig(_Section):
    """TCPA calling hours for outbound legs and callbacks, in the callee's local time."""

    start: dt_time = dt_time(8, 0)
    end: dt_time = dt_time(21, 0)
    # two-letter state -> {"start": "08:00", "end": "20:00"} (stricter state rules)
    state_overrides: dict[str, dict[str, dt_time]] = Field(default_factory=dict)


class FraudConfig(_Section):
    """Fraud scoring: thresholds on the 0..1 risk score and the signals' windows."""

    enabled: bool = True
    low: float = Field(0.3, ge=0, le=1)  # below: allow silently
    medium: float = Field(0.6, ge=0, le=1)  # at or above: flag
    high: float = Field(0.8, ge=0, le=1)  # at or above: reject
    ani_calls_per_minute: int = Field(5, gt=0)  # velocity of one caller
    ani_calls_per_hour: int = Field(20, gt=0)
    publisher_calls_per_minute: int = Field(600, gt=0)  # velocity of one publisher
    duplicate_window_s: float = Field(3600, gt=0)  # same caller, same campaign, within this window
    cluster_margin_s: int = Field(10, ge=0)  # "just past the conversion duration": within this many seconds
    cluster_share: float = Field(0.5, gt=0, le=1)  # share of a publisher's recent answered calls that cluster
    cluster_min_calls: int = Field(20, gt=0)  # recent answered calls needed before the cluster signal counts


class StirConfig(_Section):
    """STIR/SHAKEN verification (RFC 8224/8225/8588): certificates from disk, and with ``fetch`` from their x5u
    URLs over HTTPS (``dce.compliance.cert_fetch``)."""

    enabled: bool = True
    trust_store: str | None = None  # STI-CA trust anchors: a directory of PEM files, or one PEM file
    certificates: str | None = None  # directory of PEM signing certificates, matched to the PASSporT's x5u
    max_age_s: float = Field(60, gt=0)  # iat must be within this many seconds of now
    require_tn_auth_list: bool = True  # a signing certificate without a TNAuthList (RFC 8226) fails
    fetch: bool = False  # fetch x5u certificates no file provides (https: only); files then match by x5u.json only
    fetch_ca_file: str | None = None  # CA bundle for the HTTPS fetch's server certificates (default: the system's)
    fetch_timeout_s: float = Field(2.0, gt=0, le=30)  # one fetch, redirects included
    fetch_max_bytes: int = Field(65536, ge=1024, le=1 << 20)  # a larger answer is refused
    fetch_max_redirects: int = Field(3, ge=0, le=10)  # same-host redirects followed; another host is refused
    fetch_cache_size: int = Field(1024, ge=1, le=1_000_000)  # x5u URLs kept (least recently used out)
    fetch_default_ttl_s: float = Field(3600, gt=0)  # without Cache-Control max-age or Expires
    fetch_min_ttl_s: float = Field(60, ge=0)  # no-cache / max-age=0 still keep a certificate this long
    fetch_max_ttl_s: float = Field(86400, gt=0)
    fetch_failure_ttl_s: float = Field(30, gt=0)  # a failed fetch is answered from the cache this long
    fetch_max_in_flight: int = Field(64, ge=1, le=10_000)  # concurrent fetches (more misses wait for a later call)
    # hosts x5u certificates may be fetched from ("cert.example.org", ".example.org" for any under it); None: any
    fetch_allowed_hosts: list[str] | None = None
    # a call whose certificate is still being fetched waits up to this long, then gets ``pending``
    pending_wait_ms: float = Field(300, ge=0, le=10_000)
    # what such a call gets: the campaign's action for unsigned calls ("unsigned"), for failed verification
    # ("failure"), or one action for all ("allow", "flag", "reject"); its verstat is No-TN-Validation
    pending: Literal["unsigned", "failure", "allow", "flag", "reject"] = "unsigned"

    @model_validator(mode="after")
    def _check_ttls(self) -> StirConfig:
        if self.fetch_min_ttl_s > self.fetch_max_ttl_s:
            raise ValueError("fetch_min_ttl_s must not exceed fetch_max_ttl_s")
        return self


class GdprConfig(_Section):
    """Personal data handling."""

    retention_days: int | None = Field(None, gt=0)  # pseudonymise caller numbers in CDRs older than this
    retention_interval_s: float = Field(3600, gt=0)  # how often the retention job runs
    # key for pseudonyms and the audit log's number hashes (HMAC-SHA256); retention needs it
    pseudonym_key: SecretStr | None = None

    @property
    def key_bytes(self) -> bytes | None:
        """``pseudonym_key`` as the bytes HMAC takes, None when unset or empty."""
        if self.pseudonym_key is None:
            return None
        return self.pseudonym_key.get_secret_value().encode() or None


class RedisConfig(_Section):
    """Shared state between exchange nodes (optional): caps (concurrency, hour/day/month), fraud velocity, rate
    limits (when enabled) and change notifications."""

    url: str | None = None  # redis://host:6379/0; None: each node counts alone, changes spread by DB polling
    timeout_ms: int = Field(50, ge=1, le=5000)  # a slower answer on the call path falls back to local counts
    key_prefix: str = "dce:"  # every key and channel of this exchange (several exchanges can share one Redis)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{value!r} is not a redis:// URL")
        return value


class AuthSettings(_Section):
    """Who may use the side API: JWT bearer tokens (users log in) and API keys (machines)."""

    enabled: bool = True  # on by default; false opens every route (only on a closed network). See README "Auth"
    algorithm: Literal["HS256", "RS256"] = "HS256"
    secret: SecretStr | None = None  # HS256: at least 32 bytes; unset: a random one per process (tokens die with it)
    private_key_path: str | None = None  # RS256 (PEM)
    public_key_path: str | None = None
    access_ttl_s: float = Field(900, gt=0)
    refresh_ttl_s: float = Field(7 * 24 * 3600, gt=0)
    issuer: str = "dce"
    bootstrap_admin_key: SecretStr | None = None  # an X-API-Key accepted as admin, for first setup


class SecretsConfig(_Section):
    """Keys for secrets stored encrypted."""

    # Seals targets' outbound SIP passwords: a Fernet key or any secret of 16+ bytes; unset: derived from
    # auth.secret; neither: passwords cannot be stored (HA1 with a realm still can)
    target_credentials_key: SecretStr | None = None


class RateLimitSettings(_Section):
    """Token buckets per caller and endpoint class (the seed's defaults: bids 1000/s burst 2000, calls 500/s
    burst 1000, webhooks 100/s burst 200)."""

    enabled: bool = True


class LogConfig(_Section):
    """Logging."""

    json_lines: bool = False  # JSON log lines carrying call_id and trace_id (plain text otherwise)


class TracingConfig(_Section):
    """OpenTelemetry traces of calls and HTTP requests. Off: no SDK is set up (the API's no-op tracer)."""

    enabled: bool = False
    exporter: Literal["otlp", "console"] = "otlp"  # otlp: OTLP/HTTP protobuf to ``endpoint``; console: stdout
    endpoint: str = "http://127.0.0.1:4318/v1/traces"  # the collector's OTLP/HTTP traces URL
    service_name: str = "dce"
    sample_ratio: float = Field(1.0, ge=0, le=1)  # share of new traces kept; an incoming traceparent's flag wins
    export_timeout_s: float = Field(2.0, gt=0, le=60)  # one export, retries included; bounds a dead collector's
    # cost at shutdown (the last batch is given up after this) and on the exporter's thread

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


class CachesConfig(_Section):
    """Sizes (entries) of the in-memory caches (``dce.caches``), so that none grows with every distinct caller;
    0 turns one off. History the rules need (duplicate ledger, fraud windows) is kept compactly instead."""

    numbers: int = Field(8192, ge=0, le=10_000_000)  # per phone number: E.164 form, geography, zones, fraud class
    stir_identities: int = Field(4096, ge=0, le=1_000_000)  # parsed STIR/SHAKEN Identity headers


class ComplianceConfig(_Section):
    """The compliance and fraud gate in the call path."""

    enabled: bool = True
    reject_status: Literal[403, 603] = 603  # the SIP status a rejected call gets
    # what a rejected caller is told in its Reason header: "generic" (call rejected) or "detailed" (the reason code
    # and detail, fraud score included); the details are in the CDR and the API either way
    caller_reason: Literal["generic", "detailed"] = "generic"
    refresh_interval_s: float = Field(0.5, gt=0)  # how often lists and consents are re-read after API changes
    calling_hours: CallingHoursConfig = Field(default_factory=CallingHoursConfig)
    fraud: FraudConfig = Field(default_factory=FraudConfig)
    stir: StirConfig = Field(default_factory=StirConfig)
    gdpr: GdprConfig = Field(default_factory=GdprConfig)


def _normalise_did(value: str) -> str:
    try:
        number = phonenumbers.parse(value, _DEFAULT_REGION)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"DID {value!r} is not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"DID {value!r} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _check_sip_uri(value: str) -> str:
    if not value.lower().startswith(("sip:", "sips:")):
        raise ValueError(f"destination {value!r} is not a sip: URI")
    try:
        URI.parse(value)
    except Exception as exc:
        raise ValueError(f"destination {value!r} is not a valid SIP URI: {exc}") from None
    return value


class Settings(BaseSettings):
    """The whole exchange configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="DCE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    sip: SipConfig = Field(default_factory=SipConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    caches: CachesConfig = Field(default_factory=CachesConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    static_routes: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("static_routes")
    @classmethod
    def _check_static_routes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        routes: dict[str, list[str]] = {}
        for did, destinations in value.items():
            e164 = _normalise_did(did)
            if not destinations:
                raise ValueError(f"DID {did!r} has no destinations")
            if e164 in routes:
                raise ValueError(f"DID {did!r} is listed twice (as {e164})")
            routes[e164] = [_check_sip_uri(uri) for uri in destinations]
        return routes

    @property
    def media_address(self) -> str:
        """The IP address to advertise in SDP: ``media.address``, else the first SIP listen host."""
        if self.media.address:
            return self.media.address
        return self.sip.endpoints()[0][1]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Overrides (init kwargs) beat the environment, which beats the YAML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _yaml_file.get()
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def _check_yaml_file(path: Path) -> None:
    """Raise ConfigError unless ``path`` is a readable YAML mapping (or empty)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read: {exc}", file=path) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {exc}", file=path) from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError("", f"top level must be a mapping, got {type(data).__name__}", file=path)


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "settings"


_SETTINGS_ERROR_FIELD = re.compile(r'field "([^"]+)"')


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings from defaults, ``config_file``, ``DCE_*`` variables and ``overrides``.

    ``overrides`` is a nested dict (``{"sip": {"listen": [...]}}``) merged over everything else.
    Raises :class:`ConfigError` naming the first bad key, or the file when it cannot be read or parsed.
    """
    path = Path(config_file) if config_file is not None else None
    if path is not None:
        _check_yaml_file(path)
    token = _yaml_file.set(path)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ConfigError(_dotted(first["loc"]), first["msg"]) from exc
    except SettingsError as exc:
        # e.g. an environment variable that should hold JSON and does not
        match = _SETTINGS_ERROR_FIELD.search(str(exc))
        raise ConfigError(match[1] if match else "settings", str(exc)) from exc
    finally:
        _yaml_file.reset(token)
