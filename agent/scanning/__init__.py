"""Detection engine: decides whether bytes contain protected code or documents.

The public names are re-exported here so callers never reach into submodules.
"""

from agent.scanning.engine import Scanner
from agent.scanning.errors import RuleError, ScanError, ScanTimeout
from agent.scanning.limits import ScanLimits
from agent.scanning.protected import ProtectedIndex
from agent.scanning.results import Match, ScanResult, Status
from agent.scanning.rules import Ruleset, load_rules

__all__ = [
    "Match",
    "ProtectedIndex",
    "RuleError",
    "Ruleset",
    "ScanError",
    "ScanLimits",
    "ScanResult",
    "ScanTimeout",
    "Scanner",
    "Status",
    "load_rules",
]
