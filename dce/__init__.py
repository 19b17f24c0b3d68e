"""Dependable Call Exchange: a pay-per-call SIP application server."""

__version__ = "0.1.0"
