"""Small marketplaces for the routing tests."""

from __future__ import annotations

from dce.routing.model import Buyer, Campaign, Publisher, Target, TrackingNumber
from dce.routing.snapshot import MarketplaceSnapshot

DID = "+18005550100"


def market(*targets: Target, campaign: Campaign | None = None, buyers: tuple[Buyer, ...] = ()) -> MarketplaceSnapshot:
    """One publisher ``p``, buyer ``b`` (New York) plus ``buyers``, campaign ``c`` on DID ``+18005550100``."""
    camp = campaign or Campaign("c", "C", publisher_ids=("p",), target_ids=tuple(t.id for t in targets))
    return MarketplaceSnapshot.build(
        [Publisher("p", "P"), Publisher("q", "Q")],
        [Buyer("b", "B"), *buyers],
        [camp],
        targets,
        [TrackingNumber(DID, camp.id, "p"), TrackingNumber("+18005550199", camp.id, "q")],
    )


def target(tid: str, **kw: object) -> Target:
    """A target of buyer ``b`` dialling ``sip:<id>@x`` (unless ``destination`` says otherwise)."""
    kw.setdefault("buyer_id", "b")
    kw.setdefault("destination", f"sip:{tid}@x")
    return Target(id=tid, name=tid, **kw)  # type: ignore[arg-type]
