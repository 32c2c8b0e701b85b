"""Z.AI (and its mainland twin, open.bigmodel.cn): codes, hints, quota clock, prices, defaults.

Sources: shared/reference/ZAI.md (docs.z.ai's API reference, error page and pricing, 2026).
"""

from __future__ import annotations

import datetime as dt

from ..outcome import Scope
from ..pricing import Price
from .base import (
    AUTH_HINT,
    BAD_REQUEST,
    FATAL,
    PERMISSION_HINT,
    RESUME,
    SERVER_ERROR,
    Provider,
    SimulatedFaults,
)

_AUTH = ("1000", "1001", "1002", "1003", "1004")
_ACCOUNT = ("1110", "1111", "1112", "1113", "1121")
_PERMISSION = ("1220", "1221", "1222", "1309")

CODES = {
    **dict.fromkeys(_AUTH + _ACCOUNT + _PERMISSION, FATAL),
    **dict.fromkeys(("1304", "1308", "1310"), ("rate_limited", Scope.QUOTA)),
    "1302": ("rate_limited", Scope.SLOW_DOWN),  # too many in flight: lower the concurrency
    **dict.fromkeys(("1303", "1305"), ("rate_limited", Scope.RETRY)),
    "1301": ("content_filter", Scope.ROW),
    **dict.fromkeys(("1210", "1211", "1212", "1213", "1214", "1215", "1231", "1261"), BAD_REQUEST),
    # 1120: "the account cannot be accessed at the moment, try again later".
    **dict.fromkeys(("500", "1120", "1230", "1234"), SERVER_ERROR),
}

HINTS = {
    **dict.fromkeys(_AUTH, AUTH_HINT),
    **dict.fromkeys(_ACCOUNT, f"the account is not usable: check it in the console, {RESUME}"),
    "1113": f"the account has no balance: top up, {RESUME}",
    **dict.fromkeys(_PERMISSION, PERMISSION_HINT),
}

# USD per 1M tokens (input, cached input, output), docs.z.ai's pricing page (2026).
PRICES = {
    "glm-5": Price(1.0, 0.2, 3.2),
    "glm-4.7": Price(0.6, 0.11, 2.2),
    "glm-4.6": Price(0.6, 0.11, 2.2),
    "glm-4.5": Price(0.6, 0.11, 2.2),
    "glm-4.5-air": Price(0.2, 0.03, 1.1),
    "glm-4.5-x": Price(2.2, 0.45, 8.9),
    "glm-4.7-flashx": Price(0.07, 0.01, 0.4),
    "glm-4-32b-0414-128k": Price(0.1, 0.1, 0.1),
    "glm-4.7-flash": Price(0.0, 0.0, 0.0),
    "glm-4.5-flash": Price(0.0, 0.0, 0.0),
}

ZAI = Provider(
    name="zai",
    default_model="glm-4.6",
    default_base_url="https://api.z.ai/api/paas/v4",
    batch_endpoint="/v4/chat/completions",  # completion_window is deprecated (7-day cancel)
    prices=PRICES,
    codes=CODES,
    hints=HINTS,
    finish_reasons={
        "sensitive": ("content_filter", Scope.ROW, "blocked by the content filter"),
        "network_error": ("server_error", Scope.RETRY, "inference failed (network_error)"),
    },
    # Z.AI names reset times on its own clock (Beijing time) without a zone.
    reset_clock=dt.timezone(dt.timedelta(hours=8)),
    simulated=SimulatedFaults(
        rate_limited=(429, "1302", "Concurrency too high for this model; please slow down"),
        server_error=(500, "500", "Internal error (simulated)"),
        filtered_finish_reason="sensitive",
    ),
)
