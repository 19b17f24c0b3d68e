"""One pjsua2 UA registers as an agent with digest, holds the registration until told, then unregisters.

Run by tests/integration/test_agent_registration.py in a subprocess (pjsua2's library initialises once per
process). Prints one JSON line per step: ``{"step": "registered", "status": 200, "expires": N}`` once the
registrar accepted it, then waits for a line on stdin, unregisters and prints ``{"step": "unregistered", ...}``.
Exit 0 when both steps got a 200.

    python tests/integration/pjsua2_register.py --registrar 127.0.0.1:5061 --transport tls --ca-file ca.pem \
        --username alice --password secret

The null audio device; one transport of the kind asked; everything driven from this thread (threadCnt=0).
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import time
from typing import Any

import pjsua2 as pj

TRANSPORTS = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}


class Agent(pj.Account):
    def __init__(self) -> None:
        super().__init__()
        self.states: list[tuple[int, int]] = []  # (status code, expires) per registration state change

    def onRegState(self, prm: Any) -> None:  # pjsua2 callback names are camelCase
        self.states.append((prm.code, prm.expiration))


def wait(ep: pj.Endpoint, agent: Agent, seen: int, timeout_s: float = 10.0) -> tuple[int, int] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ep.libHandleEvents(20)
        if len(agent.states) > seen:
            return agent.states[-1]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--registrar", required=True, help="host:port")
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="udp")
    parser.add_argument("--ca-file")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--expires", type=int, default=300)
    args = parser.parse_args(argv)

    ep = pj.Endpoint()
    ep.libCreate()
    ep_cfg = pj.EpConfig()
    ep_cfg.uaConfig.threadCnt = 0
    ep_cfg.uaConfig.mainThreadOnly = True
    ep_cfg.logConfig.level = 3
    ep.libInit(ep_cfg)
    transport_cfg = pj.TransportConfig()
    transport_cfg.port = 0
    if args.transport == "tls":
        transport_cfg.tlsConfig.CaListFile = args.ca_file or ""
        transport_cfg.tlsConfig.verifyServer = args.ca_file is not None
        transport_cfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
    ep.transportCreate(TRANSPORTS[args.transport], transport_cfg)
    ep.libStart()
    ep.audDevManager().setNullDev()

    host = args.registrar.rsplit(":", 1)[0]
    suffix = "" if args.transport == "udp" else f";transport={args.transport}"
    acc_cfg = pj.AccountConfig()
    acc_cfg.idUri = f"sip:{args.username}@{host}"
    acc_cfg.regConfig.registrarUri = f"sip:{args.registrar}{suffix}"
    acc_cfg.regConfig.timeoutSec = args.expires
    acc_cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", args.username, 0, args.password))
    agent = Agent()
    agent.create(acc_cfg)
    code = 0
    registered = wait(ep, agent, 0)
    print(json.dumps({"step": "registered", "status": registered[0] if registered else None,
                      "expires": registered[1] if registered else None}), flush=True)
    if registered is None or registered[0] != 200:
        code = 1
    else:
        while not select.select([sys.stdin], [], [], 0.02)[0]:  # hold the registration until told
            ep.libHandleEvents(20)
        sys.stdin.readline()
        seen = len(agent.states)
        agent.setRegistration(False)
        unregistered = wait(ep, agent, seen)
        print(json.dumps({"step": "unregistered", "status": unregistered[0] if unregistered else None}),
              flush=True)
        code = 0 if unregistered is not None and unregistered[0] == 200 else 1
    agent.shutdown()
    ep.libDestroy()
    return code


if __name__ == "__main__":
    sys.exit(main())
