"""E2E suite: this copy's running services over HTTP."""
import json
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.e2e


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, json.load(resp)


def test_api_health_is_this_copy(stack):
    status, body = get_json(stack["API_URL"] + "/health")
    assert status == 200
    assert body["port_offset"] == int(stack["PORT_OFFSET"])
    assert body["compose_project"] == stack["COMPOSE_PROJECT_NAME"]
    assert body["postgres"]["ok"] is True
    time.sleep(0.2)


def test_api_unknown_path_is_404(stack):
    try:
        urllib.request.urlopen(stack["API_URL"] + "/nope", timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    else:
        pytest.fail("expected 404")
