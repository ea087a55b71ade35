"""The reasons a worker may give for an irreversible error (defined in the shared contract)."""

from aimodel_contract import VALID_REASONS, Reason, parse_reason

__all__ = ["VALID_REASONS", "Reason", "parse_reason"]
