"""Old import path of the published-numbers reader: attnedit.report.reference."""

from attnedit.report.reference import read_reference, with_reference

__all__ = ["read_reference", "with_reference"]
