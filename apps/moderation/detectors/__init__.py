"""Content-filter detectors (pure Python, no Django imports)."""

from apps.moderation.detectors.base import (
    CATEGORIES_DETECTED,
    CATEGORIES_SEVERITY,
    SEVERITIES,
    Detector,
    Scores,
    severity_at_least,
)
from apps.moderation.detectors.local import LocalDetector, normalize

__all__ = [
    "CATEGORIES_DETECTED",
    "CATEGORIES_SEVERITY",
    "SEVERITIES",
    "Detector",
    "LocalDetector",
    "Scores",
    "normalize",
    "severity_at_least",
]
