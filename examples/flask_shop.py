"""A Flask shop that logs through the OpenTelemetry SDK.

OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python examples/flask_shop.py   # PORT=8001
"""

from __future__ import annotations

import logging
import os

from flask import Flask, request
from otel_logging import send_logs_to_otlp

send_logs_to_otlp("flask-shop")
log = logging.getLogger("shop")
app = Flask(__name__)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    log.debug("health check ok")
    return {"status": "ok"}


@app.get("/orders/<int:order_id>")
def order(order_id: int) -> dict[str, object]:
    log.info("order %d viewed by %s", order_id, request.args.get("user", "guest"))
    return {"order": order_id}


@app.post("/orders/<int:order_id>/pay")
def pay(order_id: int) -> tuple[dict[str, object], int]:
    if order_id % 10 == 0:
        log.error("payment for order %d failed: card processor unreachable", order_id)
        return {"error": "payment failed"}, 502
    log.warning("payment for order %d needed a retry", order_id)
    return {"order": order_id, "paid": True}, 200


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
