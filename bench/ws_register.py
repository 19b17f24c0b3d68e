"""REGISTER with digest over SIP WebSocket (RFC 7118): registrations per second through ``/ws/sip``, and the
exchange side's CPU per registration.

The server is the real path in this process: aiohttp's WebSocket, ``dce.http_api.sip_ws``, the SIP driver, the
B2BUA and the registrar (agents in memory, no database). The clients run in a child process (so their CPU is not
counted): ``--connections`` WebSockets, one agent each, each registering ``--rounds`` times in turn on its
connection (REGISTER, 401, REGISTER with a SHA-256 digest, 200: two round trips per registration).

    .venv/bin/python bench/ws_register.py [--connections 200] [--rounds 20]

Last line: ``registrations=... seconds=... registrations_per_s=... server_cpu_us_per_registration=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web

from dce.clock import LoopClock
from dce.exchange.sip_driver import SipDriver
from dce.http_api.sip_ws import SIP_WEBSOCKETS, sip_ws_routes
from dce.sip.b2bua import B2BUA
from dce.sip.digest import Challenge, NonceSigner, authorization, ha1
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import Response, parse
from dce.sip.registrar import Account, Registrar
from dce.sip.websocket import WsLimits


def _register(user: str, cseq: int, call_id: str, authorization_value: str | None) -> str:
    lines = ["REGISTER sip:127.0.0.1 SIP/2.0", f"Via: SIP/2.0/WS {user}.invalid;branch=z9hG4bK{call_id}{cseq}",
             "Max-Forwards: 70", f"From: <sip:{user}@127.0.0.1>;tag={user}", f"To: <sip:{user}@127.0.0.1>",
             f"Call-ID: {call_id}", f"CSeq: {cseq} REGISTER", f"Contact: <sip:{user}@{user}.invalid;transport=ws>",
             "Expires: 600"]
    if authorization_value:
        lines.append(f"Authorization: {authorization_value}")
    return "\r\n".join(lines) + "\r\n\r\n"


async def _agent(session: aiohttp.ClientSession, url: str, user: str, rounds: int, start: asyncio.Event) -> int:
    async with session.ws_connect(url, protocols=("sip",)) as ws:
        await start.wait()
        done = 0
        for round_ in range(rounds):
            cseq = 1 + 2 * round_
            await ws.send_str(_register(user, cseq, f"c-{user}", None))
            challenged = parse((await ws.receive_str()).encode())
            assert isinstance(challenged, Response) and challenged.status == 401, challenged
            credentials = authorization(Challenge.parse(challenged.get_all("WWW-Authenticate")[0]), username=user,
                                        password="pw", method="REGISTER", uri="sip:127.0.0.1", cnonce=f"n{cseq}")
            await ws.send_str(_register(user, cseq + 1, f"c-{user}", str(credentials)))
            answer = parse((await ws.receive_str()).encode())
            assert isinstance(answer, Response) and answer.status == 200, answer
            done += 1
        return done


def _clients(url: str, connections: int, rounds: int, result: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def run() -> None:
        start = asyncio.Event()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            tasks = [asyncio.create_task(_agent(session, url, f"agent{i}", rounds, start))
                     for i in range(connections)]
            await asyncio.sleep(1.0)  # every connection open before the clock starts
            result.put("start")
            await asyncio.sleep(0.05)  # the server reads its CPU clock
            began = time.perf_counter()
            start.set()
            done = sum(await asyncio.gather(*tasks))
            result.put((done, time.perf_counter() - began))

    asyncio.run(run())


async def serve(connections: int, rounds: int) -> None:
    loop = asyncio.get_running_loop()
    clock = LoopClock(loop)
    registrar = Registrar(NonceSigner(b"0123456789abcdef0123456789abcdef"))
    registrar.replace_accounts(Account(f"a{i}", f"agent{i}", "dce", ha1(f"agent{i}", "dce", "pw", "SHA-256"), None)
                               for i in range(connections))
    core = B2BUA(SipEndpoint(local={"udp": ("127.0.0.1", 5060)}))
    core.registrar = registrar
    core.admission = None
    driver = SipDriver(core, clock=clock, websocket=WsLimits(max_connections_per_source=connections + 10))
    app = web.Application()
    app[SIP_WEBSOCKETS] = driver.websockets
    app.add_routes(sip_ws_routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    driver.serve_websockets("ws", (host, port))
    core.wall_offset = clock.now().timestamp() - clock.monotonic()
    spawn = multiprocessing.get_context("spawn")
    result: multiprocessing.Queue = spawn.Queue()  # type: ignore[type-arg]
    child = spawn.Process(
        target=_clients, args=(f"http://{host}:{port}/ws/sip", connections, rounds, result))
    child.start()
    while result.empty():
        await asyncio.sleep(0.005)
    assert result.get() == "start"
    cpu_before = time.process_time()
    while result.empty():
        await asyncio.sleep(0.005)
    cpu = time.process_time() - cpu_before
    done, seconds = result.get()
    child.join()
    await runner.cleanup()
    await driver.close()
    print(f"{connections} WebSocket agents x {rounds} registrations: {done / seconds:.0f}/s, "
          f"server CPU {cpu / done * 1e6:.0f} us per registration (two round trips each)")
    print(f"registrations={done} seconds={seconds:.2f} registrations_per_s={done / seconds:.0f} "
          f"server_cpu_us_per_registration={cpu / done * 1e6:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(serve(args.connections, args.rounds))


if __name__ == "__main__":
    main()
