"""A Django shop in one file that logs through the OpenTelemetry SDK.

OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python examples/django_shop.py   # PORT=8002
"""

from __future__ import annotations

import logging
import os
import sys

import django
from django.conf import settings
from django.core.management import execute_from_command_line
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from otel_logging import send_logs_to_otlp

settings.configure(
    DEBUG=False,
    SECRET_KEY="example-only-not-a-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)
django.setup()  # Django's own logging config first; ours adds to the root logger
send_logs_to_otlp("django-shop")
log = logging.getLogger("shop")


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    log.debug("health check ok")
    return JsonResponse({"status": "ok"})


@require_GET
def order(request: HttpRequest, order_id: int) -> JsonResponse:
    log.info("order %d viewed by %s", order_id, request.GET.get("user", "guest"))
    return JsonResponse({"order": order_id})


@csrf_exempt
@require_POST
def pay(request: HttpRequest, order_id: int) -> JsonResponse:
    if order_id % 10 == 0:
        log.error("payment for order %d failed: card processor unreachable", order_id)
        return JsonResponse({"error": "payment failed"}, status=502)
    log.warning("payment for order %d needed a retry", order_id)
    return JsonResponse({"order": order_id, "paid": True})


urlpatterns = [
    path("healthz", healthz),
    path("orders/<int:order_id>", order),
    path("orders/<int:order_id>/pay", pay),
]

if __name__ == "__main__":
    address = f"127.0.0.1:{os.environ.get('PORT', '8002')}"
    execute_from_command_line([sys.argv[0], "runserver", address, "--noreload", *sys.argv[1:]])
