"""Section 11's HTTP work (copied 10 times): the copy's api answers, through its published port."""
import json
import urllib.request

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("n", range(10))
def test_api_answers(stack, n):
    with urllib.request.urlopen(stack["API_URL"] + ("/health" if n % 2 else "/"), timeout=10) as resp:
        body = json.load(resp)
    assert resp.status == 200 and body["port_offset"] == int(stack["PORT_OFFSET"])
