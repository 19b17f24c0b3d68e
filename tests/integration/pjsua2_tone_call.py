"""One pjsua2 process with two UAs: A calls, B auto-answers and records, A plays a 1 kHz tone, A hangs up.

Run by tests/integration/test_pjsua2_interop.py in a subprocess (pjsua2's library is initialised once per process,
and a crash there must not take pytest down). Prints one JSON line with what happened; exit 0 when B answered and
the call ended normally, non-zero otherwise.

    python tests/integration/pjsua2_tone_call.py --a-port 5090 --b-port 5092 --wav /tmp/b.wav \
        --target sip:+18005550100@127.0.0.1:5060      # through the exchange (routed to B's port)
    python tests/integration/pjsua2_tone_call.py --a-port 5090 --b-port 5092 --wav /tmp/b.wav   # A -> B directly

No registration; the null audio device; UDP transports on the given ports; RTP ports from --rtp-port upward.
Everything is driven from this thread (threadCnt=0, libHandleEvents), with a bounded wait at each step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import pjsua2 as pj

TONE_HZ = 1000


class Call(pj.Call):
    def __init__(self, party: Party, acc: pj.Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self.party = party
        self.confirmed = False
        self.disconnected = False
        self.last_status = 0
        self.media_active = False

    def onCallState(self, prm: Any) -> None:  # pjsua2 callback names are camelCase
        info = self.getInfo()
        self.last_status = info.lastStatusCode
        self.party.events.append(f"state {info.stateText} {info.lastStatusCode}")
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed = True
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True

    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.media_active = True
                self.party.on_audio(self, self.getAudioMedia(index))


class Party(pj.Account):
    """A UA: one account bound to its own UDP transport."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.events: list[str] = []
        self.calls: list[Call] = []
        self.tone: pj.ToneGenerator | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.wav: str | None = None
        self.callee: Party | None = None

    def onIncomingCall(self, prm: Any) -> None:
        callee = self.callee or self  # whichever account pjsua picked, an incoming call is B's
        call = Call(callee, self, prm.callId)
        callee.calls.append(call)
        callee.events.append(f"incoming on {self.name}")
        answer = pj.CallOpParam()
        answer.statusCode = 200
        call.answer(answer)

    def on_audio(self, call: Call, audio: pj.AudioMedia) -> None:
        if self.wav is not None and self.recorder is None:  # B: record what arrives
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(self.wav)
            audio.startTransmit(self.recorder)
            self.events.append("recording")
        if self.tone is None and self.wav is None:  # A: play the tone into the call
            self.tone = pj.ToneGenerator()
            self.tone.createToneGenerator()
            tone = pj.ToneDesc()
            tone.freq1 = TONE_HZ
            tone.freq2 = 0
            tone.on_msec = 1000
            tone.off_msec = 0
            tone.volume = 0
            tones = pj.ToneDescVector()
            tones.append(tone)
            self.tone.play(tones, True)
            self.tone.startTransmit(audio)
            self.events.append("playing tone")


def make_party(ep: pj.Endpoint, name: str, sip_port: int, rtp_port: int, username: str | None = None,
               password: str = "") -> Party:
    transport_cfg = pj.TransportConfig()
    transport_cfg.port = sip_port
    transport_cfg.boundAddress = "127.0.0.1"
    transport_cfg.publicAddress = "127.0.0.1"
    transport_id = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport_cfg)
    acc_cfg = pj.AccountConfig()
    acc_cfg.idUri = f"sip:{name}@127.0.0.1:{sip_port}"
    acc_cfg.sipConfig.transportId = transport_id
    acc_cfg.mediaConfig.transportConfig.port = rtp_port
    acc_cfg.mediaConfig.transportConfig.portRange = 10
    acc_cfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    acc_cfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
    acc_cfg.natConfig.iceEnabled = False
    acc_cfg.natConfig.sdpNatRewriteUse = 0
    acc_cfg.natConfig.viaRewriteUse = 0
    acc_cfg.natConfig.contactRewriteUse = 0
    if username is not None:  # any realm; pjsip picks the challenge's algorithm
        acc_cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", username, 0, password))
    party = Party(name)
    party.create(acc_cfg)
    return party


def pump(ep: pj.Endpoint, until: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        ep.libHandleEvents(10)
    return bool(until())


def stream_packets(call: Call) -> dict[str, int]:
    try:
        stat = call.getStreamStat(0)
        return {"rx_packets": int(stat.rtcp.rxStat.pkt), "tx_packets": int(stat.rtcp.txStat.pkt)}
    except pj.Error:
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a-port", type=int, required=True)
    parser.add_argument("--b-port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, default=24000, help="RTP ports: A from here, B from here + 20")
    parser.add_argument("--target", help="the URI A calls (default: B directly)")
    parser.add_argument("--wav", required=True, help="where B records the call audio")
    parser.add_argument("--seconds", type=float, default=3.0, help="talk time before A hangs up")
    parser.add_argument("--log-level", type=int, default=2)
    parser.add_argument("--username", help="A answers digest challenges with this user (and --password)")
    parser.add_argument("--password", default="")
    args = parser.parse_args(argv)

    ep = pj.Endpoint()
    ep.libCreate()
    ep_cfg = pj.EpConfig()
    ep_cfg.uaConfig.threadCnt = 0
    ep_cfg.uaConfig.mainThreadOnly = True
    ep_cfg.uaConfig.maxCalls = 4
    ep_cfg.logConfig.level = args.log_level
    ep_cfg.logConfig.consoleLevel = args.log_level
    ep_cfg.medConfig.noVad = True
    ep_cfg.medConfig.clockRate = 8000
    ep.libInit(ep_cfg)
    ep.audDevManager().setNullDev()
    a = make_party(ep, "alice", args.a_port, args.rtp_port, args.username, args.password)
    b = make_party(ep, "bob", args.b_port, args.rtp_port + 20)
    b.wav = args.wav
    a.callee = b
    ep.libStart()

    report: dict[str, Any] = {"target": args.target or f"sip:bob@127.0.0.1:{args.b_port}"}
    ok = False
    call: Call | None = None
    try:
        call = Call(a, a)
        a.calls.append(call)
        call.makeCall(report["target"], pj.CallOpParam(True))
        answered = pump(ep, lambda: call.confirmed or call.disconnected, 15)
        report["answered"] = answered and call.confirmed
        report["a_status"] = call.last_status
        if report["answered"]:
            pump(ep, lambda: False, args.seconds)
            report["a_stream"] = stream_packets(call)
            report["b_stream"] = stream_packets(b.calls[0]) if b.calls else {}
            call.hangup(pj.CallOpParam(True))
        ended = pump(ep, lambda: call.disconnected and all(c.disconnected for c in b.calls), 10)
        report["ended"] = ended
        report["b_calls"] = len(b.calls)
        report["b_media"] = any(c.media_active for c in b.calls)
        ok = bool(report["answered"] and ended and b.calls and report["b_media"])
    finally:
        report["a_events"] = a.events
        report["b_events"] = b.events
        # pjsua2 objects must be gone before the library is: recorder (this writes the WAV header), tone, calls,
        # accounts (CPython frees each as its last reference goes).
        b.recorder = None
        if a.tone is not None:
            a.tone.stop()
        a.tone = None
        a.calls.clear()
        b.calls.clear()
        call = None
        a.shutdown()
        b.shutdown()
        print(json.dumps(report), flush=True)
        ep.libDestroy()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
