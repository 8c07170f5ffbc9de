"""The system clock (the cloud's: Step Functions' Wait states do the waiting)."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def advance(self, seconds: float) -> None:
        """Time passes by itself here; nothing to do."""
