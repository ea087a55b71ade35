"""Worker-side SDK: report irreversible errors of an AI model worker to the AI Model Operator.

Standard library only, so that any worker image can vendor or install it::

    from aimodel_worker import Reason, report_error

    report_error(Reason.CONFIGURATION_ERROR, 'Local model "not-found-model" is not supported.')
"""

from .credentials import Credentials, load_credentials
from .errors import ApiError, ConfigError, PermissionDenied, ReportError
from .reasons import Reason
from .reporter import Reporter, async_report_error, report_error

__all__ = [
    "ApiError",
    "ConfigError",
    "Credentials",
    "PermissionDenied",
    "Reason",
    "ReportError",
    "Reporter",
    "async_report_error",
    "load_credentials",
    "report_error",
]
