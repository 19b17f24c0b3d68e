"""A TCP proxy on loopback between the exchange and its database, in its own thread, that tests and benches use
to make the database go away: loudly (:meth:`CuttableProxy.cut`: the port closes, connections are reset) or
silently (:meth:`CuttableProxy.silence`: connections are accepted and bytes vanish, no RST, no FIN, as when a
firewall or a dead link drops packets).

A connection that went silent stays a zombie after :meth:`CuttableProxy.heal` (the server forgot it, and no
RST ever reaches the client): only new connections work again. A client without timeouts waits on a zombie
forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from tests.integration.sipp import HOST, free_port


class CuttableProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream``; see the module docstring."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port("tcp")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.silent = False
        self.zombies: set[asyncio.StreamWriter] = set()  # connections that went silent: they never speak again
        self.restore()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, ...]) -> None:
        try:
            while data := await reader.read(65536):
                if any(end in self.zombies for end in pair):
                    continue  # swallowed: no answer, no reset
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not any(end in self.zombies for end in pair):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:  # accepted, then nothing: the client's bytes go nowhere
            self.zombies.add(writer)
            self.writers.add(writer)
            with contextlib.suppress(ConnectionError, OSError):
                while await reader.read(65536):
                    pass
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self.writers.update(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, pair), self._pipe(up_reader, writer, pair))
        except asyncio.CancelledError:
            pass  # the proxy is closing
        finally:
            self.writers.difference_update(pair)

    def restore(self) -> None:
        async def listen() -> None:
            self.server = await asyncio.start_server(self._handle, HOST, self.port, reuse_address=True)
        self._call(listen())

    def cut(self) -> None:
        """Close the port and reset every connection through it."""
        async def close() -> None:
            assert self.server is not None
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()
            self.zombies.clear()
        self._call(close())

    def silence(self) -> None:
        """From now on nothing gets through, and nobody is told: every connection becomes a zombie."""
        async def hush() -> None:
            self.silent = True
            self.zombies.update(self.writers)
        self._call(hush())

    def heal(self) -> None:
        """New connections work again; the zombies stay silent."""
        async def speak() -> None:
            self.silent = False
        self._call(speak())

    def close(self) -> None:
        self.cut()

        async def finish_pipes() -> None:  # connections still being piped end here, not at the loop's garbage
            pipes = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

        self._call(finish_pipes())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

