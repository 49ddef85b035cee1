"""Count AWS API calls by service and operation, through botocore's event hooks."""

from __future__ import annotations

from collections import Counter
from typing import Any


class ApiCallCounter:
    """Attach to any number of boto3 clients; ``counts`` maps 'service.Operation' to calls."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def attach(self, client: Any) -> Any:
        """Count every call ``client`` makes from now on; return the client."""
        service = client.meta.service_model.service_name
        client.meta.events.register(
            f"before-call.{client.meta.service_model.service_id.hyphenize()}",
            lambda model, **_: self.counts.update([f"{service}.{model.name}"]),
        )
        return client
