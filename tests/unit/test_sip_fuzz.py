"""Fuzz: mutated INVITEs through the whole sans-IO core as ``dce serve`` runs it (driver, B2BUA, endpoint), over
UDP and TCP framing, with the state of earlier calls around: no exception, no ERROR log, and everything we send
is well-formed (bar a 400 that echoes the sender's own unreadable CSeq/Via).

Hypothesis draws batches of mutation programs against a valid INVITE: byte flips, header duplication and
removal, huge values, truncation, CRLF games (bare LF, bare CR, folding, an early blank line, trailing garbage),
Content-Length lies. A mutant the core offers as a call is dialled out and then ended, so the outbound leg is
built from the mutant's headers too. Slow-marked: CI runs ``FUZZ_CASES`` (10k) mutants; ``DCE_SOAK=1`` runs
100k (``DCE_FUZZ_CASES`` overrides both).
"""

from __future__ import annotations

import logging
import os
import random
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dce.clock import VirtualClock
from dce.exchange.sip_driver import SipDriver
from dce.sip.b2bua import B2BUA, CallEvent, CallOffered
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import SipParseError, StreamFramer, parse
from tests.unit.sipfactory import SDP_A, new_branch
from tests.unit.test_callflow import RecordedSockets, VirtualTimer

pytestmark = [pytest.mark.slow]

FUZZ_CASES = int(os.environ.get("DCE_FUZZ_CASES") or (100_000 if os.environ.get("DCE_SOAK") == "1" else 10_000))
BATCH = 50  # mutants per hypothesis example (generation is amortised; the core dominates)
SOURCE = ("192.0.2.10", 5060)

HEADERS = [
    "Via: SIP/2.0/{transport} 192.0.2.10:5060;branch={branch};rport",
    "Max-Forwards: 70",
    'From: "Alice" <sip:+12025550123@192.0.2.10>;tag=a{n}',
    "To: <sip:+18005550100@10.0.0.1>",
    "Call-ID: fuzz-{n}@192.0.2.10",
    "CSeq: 1 INVITE",
    "Contact: <sip:alice@192.0.2.10:5060>",
    "User-Agent: Fuzzer",
    "Supported: timer",
    "Allow: INVITE, ACK, BYE, CANCEL",
    "P-Asserted-Identity: <sip:+12025550123@192.0.2.10>",
    "Content-Type: application/sdp",
    "Content-Length: {length}",
]
HUGE = st.sampled_from([b"9" * 30, b"a" * 5000, b"-1", b"4294967296", b"\xff" * 64, b"%00" * 50, b"<" * 200,
                        b'"' * 31, b";" * 500, b"," * 500, b"sip:" + b"x" * 2000 + b"@h", b"\x00", b"", b" " * 100])
CRLF = st.sampled_from([b"\n", b"\r", b"\r\n ", b"\r\n\t", b"\r\n\r\n", b"\r\r\n", b"\n\r", b"\r\n\r\n\r\n"])
TOKENS = st.sampled_from([b"SIP/2.0", b"INVITE", b"ACK", b"BYE", b"CANCEL", b":", b";", b",", b"<", b">", b"@",
                          b"tag=", b"branch=z9hG4bK", b"Content-Length: 0", b"Via: SIP/2.0/UDP x", b"[::1]",
                          b"\xc3\x28", b"\xed\xa0\x80", b"%", b"\\", b"\t"])

Op = tuple  # (kind, ...): see mutate()
OPS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("dup"), st.integers(0, 64)),
    st.tuples(st.just("drop"), st.integers(0, 64)),
    st.tuples(st.just("huge"), st.integers(0, 64), HUGE),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
    st.tuples(st.just("crlf"), st.integers(0, 1 << 16), CRLF),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.one_of(TOKENS, st.binary(min_size=1, max_size=6))),
    st.tuples(st.just("length"), st.sampled_from([b"0", b"1", b"9999", b"-5", b"x", b"00150", b"1 1"])),
    st.tuples(st.just("trailer"), st.binary(max_size=40)),
    st.tuples(st.just("method"), st.sampled_from([b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"REGISTER", b"PRACK",
                                                  b"UPDATE", b"INFO", b"inv ite", b""])),
)
PROGRAM = st.lists(OPS, min_size=1, max_size=4)


HUGE_VALUES = [b"9" * 30, b"a" * 5000, b"-1", b"4294967296", b"\xff" * 64, b"\x00", b";" * 500, b"<" * 200]
CRLF_GAMES = [b"\n", b"\r", b"\r\n ", b"\r\n\r\n", b"\r\r\n"]


def random_program(rng: random.Random) -> list[Op]:
    """A mutation program from a seeded generator (the real-socket run, where hypothesis does not drive)."""
    program: list[Op] = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "dup", "drop", "huge", "truncate", "crlf", "insert", "length", "trailer"])
        spot = rng.randrange(1 << 16)
        if kind == "flip":
            program.append((kind, spot, rng.randint(1, 255)))
        elif kind in ("dup", "drop"):
            program.append((kind, spot % 64))
        elif kind == "huge":
            program.append((kind, spot % 64, rng.choice(HUGE_VALUES)))
        elif kind == "truncate":
            program.append((kind, spot))
        elif kind == "crlf":
            program.append((kind, spot, rng.choice(CRLF_GAMES)))
        elif kind == "insert":
            program.append((kind, spot, rng.randbytes(rng.randint(1, 6))))
        elif kind == "length":
            program.append((kind, rng.choice([b"0", b"9999", b"-5", b"x"])))
        else:
            program.append((kind, rng.randbytes(rng.randint(0, 40))))
    return program


def invite(n: int, transport: str) -> tuple[list[bytes], bytes]:
    """A valid INVITE's start line and header lines (bytes) and body."""
    values = {"transport": transport.upper(), "branch": new_branch(), "n": n, "length": len(SDP_A)}
    lines = [b"INVITE sip:+18005550100@10.0.0.1 SIP/2.0"]
    lines += [line.format(**values).encode() for line in HEADERS]
    return lines, SDP_A


def mutate(n: int, transport: str, program: list[Op]) -> bytes:
    lines, body = invite(n, transport)
    tail = b""
    for op in program:
        kind = op[0]
        if kind == "dup" and len(lines) > 1:
            i = 1 + op[1] % (len(lines) - 1)
            lines.insert(i, lines[i])
        elif kind == "drop" and len(lines) > 1:
            del lines[op[1] % len(lines)]
        elif kind == "huge" and len(lines) > 1:
            i = 1 + op[1] % (len(lines) - 1)
            name = lines[i].split(b":", 1)[0]
            lines[i] = name + b": " + op[2]
        elif kind == "length":
            lines = [line for line in lines if not line.lower().startswith(b"content-length")]
            lines.append(b"Content-Length: " + op[1])
        elif kind == "trailer":
            tail += op[1]
        elif kind == "method":
            start = lines[0].split(b" ", 1)
            lines[0] = op[1] + b" " + (start[1] if len(start) > 1 else b"")
            lines = [b"CSeq: 1 " + op[1] if line.startswith(b"CSeq:") else line for line in lines]
    data = bytearray(b"\r\n".join(lines) + b"\r\n\r\n" + body + tail)
    for op in program:  # byte-level edits last, on the assembled message
        kind = op[0]
        if kind == "flip" and data:
            data[op[1] % len(data)] ^= op[2]
        elif kind == "truncate":
            del data[op[1] % (len(data) + 1):]
        elif kind == "crlf":
            crlfs = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\r\n"]
            if crlfs:
                i = crlfs[op[1] % len(crlfs)]
                data[i:i + 2] = op[2]
        elif kind == "insert":
            i = op[1] % (len(data) + 1)
            data[i:i] = op[2]
    return bytes(data)


class ErrorLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Core:
    """One long-lived core: calls, transactions and timers of earlier mutants stay around for later ones."""

    def __init__(self) -> None:
        self.clock = VirtualClock(datetime(2026, 3, 8, 12, 0, tzinfo=UTC), monotonic=100.0)
        self.wire = RecordedSockets()
        self.timer = VirtualTimer()
        self.drops: list[str] = []
        endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060), "tcp": ("10.0.0.1", 5060)})
        self.driver = SipDriver(B2BUA(endpoint), clock=self.clock, sockets=self.wire, timers=self.timer,
                                on_error=self.drops.append)  # no flood guard: every mutant reaches the core
        self.offered: list[CallEvent] = []
        self.driver.deliver_to(self._on_event)
        self.cases = 0
        self.answered = 0
        self.framer = StreamFramer()

    def _on_event(self, event: CallEvent) -> None:
        if isinstance(event, CallOffered):
            self.offered.append(event)

    def feed(self, data: bytes, transport: str) -> None:
        self.cases += 1
        if transport == "tcp":
            self.framer = StreamFramer()  # a fresh connection per mutant: framing errors close only that one
            try:
                messages = self.framer.feed(data)
            except SipParseError:
                messages = []
            for message in messages:
                self.driver.receive(message, "tcp", SOURCE, stream=True)
        else:
            self.driver.receive(data, "udp", SOURCE)
        for event in self.offered:
            call = event.call  # type: ignore[attr-defined]
            try:
                self.driver.dial(call, "sip:127.0.0.1:5080", ring_timeout=30, max_duration=None)
            except ValueError:
                self.driver.reject(call, 488)  # an offer the media plane cannot read (not with passthrough)
            else:
                self.driver.hangup(call, reason="fuzz")
        self.offered.clear()
        if self.cases % 200 == 0:  # time passes: retransmissions and timeouts run among the mutants
            self.clock.advance(40.0)
            if self.timer.armed is not None and not self.timer.armed.cancelled:
                self.driver.handle_timer()
        self.check_output()

    def check_output(self) -> None:
        for data, _, _ in self.wire.take():
            try:
                parse(data)
            except SipParseError:  # a 400/505 echoing the sender's own unreadable values: nothing better exists
                assert data.startswith((b"SIP/2.0 400 ", b"SIP/2.0 505 ")), data[:300]
            if data.startswith(b"SIP/2.0 "):
                self.answered += 1


def test_mutant_generator_covers_its_operations() -> None:
    base = mutate(1, "udp", [])
    assert parse(base).method == "INVITE"  # type: ignore[union-attr]
    assert mutate(1, "udp", [("dup", 1)]).count(b"Max-Forwards") == 2
    assert b"User-Agent" not in mutate(1, "udp", [("drop", 8)])
    assert b"Call-ID: " + b"a" * 5000 in mutate(1, "udp", [("huge", 4, b"a" * 5000)])
    assert len(mutate(1, "udp", [("truncate", 10)])) == 10
    assert mutate(1, "tcp", [("crlf", 0, b"\n")]).startswith(b"INVITE sip:+18005550100@10.0.0.1 SIP/2.0\nVia")


@pytest.mark.timeout(900)
def test_fuzz_mutated_invites_through_the_core_over_udp_and_tcp() -> None:
    core = Core()
    errors = ErrorLogs()
    logging.getLogger("dce").addHandler(errors)
    examples = max(1, FUZZ_CASES // (2 * BATCH))

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(PROGRAM, min_size=BATCH, max_size=BATCH))
    def run(programs: list[list[Op]]) -> None:
        for program in programs:
            n = core.cases
            core.feed(mutate(n, "udp", program), "udp")
            core.feed(mutate(n + 1, "tcp", program), "tcp")

    try:
        run()
    finally:
        logging.getLogger("dce").removeHandler(errors)
    print(f"fuzz: {core.cases} mutants, {core.answered} responses, drops {sorted(set(core.drops))}")
    assert core.cases >= FUZZ_CASES * 0.9
    assert not errors.records, errors.records[0].getMessage()
    assert "core_exception" not in core.drops
    # and it still takes a clean call afterwards
    core.driver.receive(mutate(10**9, "udp", []), "udp", SOURCE)
    assert [type(e) for e in core.offered] == [CallOffered]
    assert core.wire.take()[0][0].startswith(b"SIP/2.0 100 Trying\r\n")
