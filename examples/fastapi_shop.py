"""A FastAPI shop that logs through the OpenTelemetry SDK.

OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python examples/fastapi_shop.py   # PORT=8000
"""

from __future__ import annotations

import logging
import os

import uvicorn
from fastapi import FastAPI, HTTPException
from otel_logging import send_logs_to_otlp

send_logs_to_otlp("fastapi-shop")
log = logging.getLogger("shop")
app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    log.debug("health check ok")
    return {"status": "ok"}


@app.get("/orders/{order_id}")
def order(order_id: int, user: str = "guest") -> dict[str, object]:
    log.info("order %d viewed by %s", order_id, user)
    return {"order": order_id}


@app.post("/orders/{order_id}/pay")
def pay(order_id: int) -> dict[str, object]:
    if order_id % 10 == 0:
        log.error("payment for order %d failed: card processor unreachable", order_id)
        raise HTTPException(status_code=502, detail="payment failed")
    log.warning("payment for order %d needed a retry", order_id)
    return {"order": order_id, "paid": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
