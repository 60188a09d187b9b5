"""What BlueOS and Cockpit read from the extension: service metadata and Cockpit extras.

BlueOS polls `/register_service` to name the sidebar entry; Cockpit follows
`extras.cockpit` to offer the start/stop recording actions. Cockpit versions differ in the
key style they read, so the extras carry both camelCase and snake_case keys.
"""

from __future__ import annotations

import json
from typing import Any

from qsensor_pi import __version__

SERVICE_PORT = 9150
COCKPIT_API_VERSION = "1.0.0"


def service_metadata() -> dict[str, Any]:
    return {
        "name": "Q-Sensor",
        "description": "Records a Biospherical Q-Series light sensor on the vehicle",
        "icon": "mdi-white-balance-sunny",
        "company": "qsensor",
        "version": __version__,
        "webpage": "/",
        "api": "/docs",
        "new_page": False,
        "works_in_relative_paths": True,
        "extras": {"cockpit": "/cockpit_extras.json"},
    }


def _http_action(action_id: str, name: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    url = f"http://{{{{ vehicle-address }}}}:{SERVICE_PORT}{path}"
    body_text = json.dumps(body)
    headers = {"Content-Type": "application/json"}
    config = {
        "name": name,
        "url": url,
        "method": "POST",
        "headers": headers,
        "urlParams": {},
        "url_params": {},
        "body": body_text,
    }
    return {
        "id": action_id,
        "name": name,
        "type": "http-request",
        "config": config,
        "version": __version__,
    }


def cockpit_extras() -> dict[str, Any]:
    """Cockpit actions to start and stop a recording on this vehicle."""
    start = _http_action(
        "qsensor_record_start",
        "Q-Sensor: start recording",
        "/record/start",
        {"mission": "cockpit", "roll_interval_s": 60},
    )
    stop = _http_action(
        "qsensor_record_stop_current",
        "Q-Sensor: stop recording",
        "/record/stop",
        {"session_id": "current"},
    )
    actions = [start, stop]
    plain = [
        {k: a["config"][k] for k in ("name", "url", "method", "body")} | {"id": a["id"]}
        for a in actions
    ]
    return {
        "target_cockpit_api_version": COCKPIT_API_VERSION,
        "targetCockpitApiVersion": COCKPIT_API_VERSION,
        "target_system": "Cockpit",
        "targetSystem": "Cockpit",
        "widgets": [],
        "actions": actions,
        "http_json_actions": plain,
        "httpJsonActions": plain,
    }
