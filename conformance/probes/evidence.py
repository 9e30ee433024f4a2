"""Attaching observations to Allure: the replies a verdict was made on."""

import json

import allure

from conformance.targets.base import Batch


def attach_batch(batch: Batch, name: str) -> None:
    replies = [
        {"status": r.status, "served_by": r.served_by, "error": r.error,
         "server": r.headers.get("server"), "elapsed": round(r.elapsed, 4), "body": r.body[:300]}
        for r in batch
    ]
    data = {"url": batch.url, "client": batch.client, "request_headers": dict(batch.request_headers),
            "count": len(batch), "served_by": dict(batch.served_by()),
            "statuses": {str(k): v for k, v in batch.statuses().items()}, "replies": replies}
    allure.attach(json.dumps(data, indent=1), name=name, attachment_type=allure.attachment_type.JSON)
