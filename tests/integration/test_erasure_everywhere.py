"""GDPR erasure through the exchange's real registry: after erasing a number, no table holds it in any form.

The number is put everywhere the exchange keeps numbers: CDRs, a list's compact chunks (an import) and its
pending adds (an API add), and consent versions. Erasure runs through the side API as the exchange mounts it
(``build_app`` with ``personal_data.ERASERS``); then every column of every table is scanned: text and JSON for
the digits, integers for the number's value, binary for its int64 encoding.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import JSON, BigInteger, Integer, LargeBinary, String, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db import consent_repository, list_repository
from dce.db.cdr_repository import insert_cdrs
from dce.db.models import Base
from dce.exchange.personal_data import ERASERS, EXPORTERS
from dce.http_api.app import build_app
from dce.http_api.gdpr import ERASERS as ERASERS_KEY
from dce.http_api.gdpr import EXPORTERS as EXPORTERS_KEY
from dce.http_api.gdpr import PSEUDONYM_KEY
from dce.http_api.metrics import ExchangeMetrics
from tests.cdr_factory import make_cdr

pytestmark = pytest.mark.integration

NUMBER = "+13125550199"  # make_cdr's caller
VALUE = 13125550199
NEIGHBOURS = [13125550100 + n for n in range(50)]  # other numbers sharing the list's chunk


async def holders(engine: AsyncEngine) -> list[str]:
    """``table.column`` of every place still holding the number."""
    found: list[str] = []
    async with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = (await connection.execute(select(table))).mappings().all()
            for column in table.columns:
                kind = column.type
                for row in rows:
                    value = row[column.name]
                    if value is None:
                        continue
                    if isinstance(kind, LargeBinary):
                        held = VALUE in np.frombuffer(bytes(value), dtype="<i8")
                    elif isinstance(kind, BigInteger | Integer):
                        held = int(value) == VALUE
                    elif isinstance(kind, String | Text | JSON):
                        held = "3125550199" in str(value)
                    else:
                        held = False
                    if held:
                        found.append(f"{table.name}.{column.name}")
                        break
    return found


async def test_an_erased_number_is_held_by_no_table(engine: AsyncEngine) -> None:
    await insert_cdrs(engine, [make_cdr(n) for n in range(3)])
    imported = await list_repository.create_list(engine, "dnc_national", name="national")
    await list_repository.import_numbers(engine, imported.id, [VALUE, *NEIGHBOURS])
    added = await list_repository.create_list(engine, "litigator", name="litigators")
    await list_repository.add_numbers(engine, added.id, [VALUE, NEIGHBOURS[0]])
    granted = datetime(2026, 1, 5, tzinfo=UTC)
    await consent_repository.record_consent(engine, number=NUMBER, business="b1", consent_type="express_written",
                                            channel="web", source="https://lp.example/form", proof_hash="0" * 64,
                                            granted_at=granted)
    assert {"calls.caller", "number_list_adds.number", "consents.number"} <= set(await holders(engine))
    assert any(place.startswith("number_list_chunks.") for place in await holders(engine))

    app = build_app(engine=engine, metrics=ExchangeMetrics(),
                    state={ERASERS_KEY: ERASERS, EXPORTERS_KEY: EXPORTERS, PSEUDONYM_KEY: b"k"})
    async with TestClient(TestServer(app)) as client:
        exported: dict[str, Any] = await (await client.get(f"/api/v1/gdpr/export/{NUMBER}")).json()
        assert {"calls", "lists", "consents"} <= set(exported["data"])
        assert len(exported["data"]["lists"]) == 2 and len(exported["data"]["consents"]) == 1
        response = await client.post("/api/v1/gdpr/erasures", json={"number": NUMBER})
        assert response.status == 200, await response.text()
        report = await response.json()

    assert await holders(engine) == []
    assert report["counts"]["calls"] == 3 and report["counts"]["lists"] == 2 and report["counts"]["consents"] == 1
    book = await list_repository.load_book(engine)
    assert book.screen(NUMBER, "", None) == ([], frozenset())
    neighbour = "+" + str(NEIGHBOURS[1])
    assert [f.code for f in book.screen(neighbour, "", None)[0]] == ["dnc_national"]  # the rest of the chunk stays
