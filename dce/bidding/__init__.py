"""Auctions and real-time bidding.

``bids`` (Bid, BidRecord, parse_bid), ``auction`` (Auction for one call, LiveAuctions for auction-mode campaigns),
``rtb`` (RtbPinger: outbound pings to buyers), ``inbound`` (InboundPings: publishers' pings, Reservations).
"""
