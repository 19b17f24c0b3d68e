"""Every table outside ``calls`` that holds phone numbers, for GDPR erasure and export.

``dce.db.gdpr`` always covers the calls table; these registries add the rest. A new table that stores numbers
must be listed here (the erasure test scans every table for the erased number, so a missing entry fails it).
"""

from __future__ import annotations

from collections.abc import Mapping

from dce.db import consent_repository, list_repository
from dce.db.gdpr import Eraser, Exporter

ERASERS: Mapping[str, Eraser] = {
    "lists": list_repository.erase_number,
    "consents": consent_repository.erase_number,
}
EXPORTERS: Mapping[str, Exporter] = {
    "lists": list_repository.export_number,
    "consents": consent_repository.export_number,
}
