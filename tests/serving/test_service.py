"""The standalone Bento: `bentoml serve` over a stored model, and `bentoml build`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serving import package
from serving.auth import AuthConfig, create_token
from tests.helpers import ROOT, free_port, wait_until

BENTOML = str(Path(sys.executable).parent / "bentoml")


@pytest.fixture(scope="module")
def served(untrained, tmp_path_factory):
    """(url, tag, model, read token) of a real `bentoml serve`."""
    model, data, items, services = untrained
    auth = AuthConfig(tokens_file=str(tmp_path_factory.mktemp("auth") / "tokens.yaml"))
    token = create_token(auth, "bento-client", ["read"])
    tag = package.save(model, items, metrics={package.SCORE: 0.0}, dataset_fingerprint="0" * 64,
                       feature_services=services, genre_names=data.genre_names,
                       log=lambda _: None)
    port = free_port()
    env = {**os.environ, "IREC_MODEL_TAG": tag, "IREC_TOKENS_FILE": auth.tokens_file}
    proc = subprocess.Popen([BENTOML, "serve", "serving.service:InterestRecommender",
                             "--port", str(port), "--host", "127.0.0.1"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"bentoml serve exited with {proc.returncode}"
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

    try:
        wait_until(ready, 120, f"bentoml serve to answer 200 on {url}/readyz", interval_s=0.5,
                   ignore=(httpx.HTTPError,))
    except BaseException:
        proc.kill()
        raise
    yield url, tag, model, token
    proc.terminate()
    proc.wait(timeout=20)


def _post(served, body, token: str | None = None) -> httpx.Response:
    return httpx.post(f"{served[0]}/recommend", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {token or served[3]}"})


def test_the_bento_needs_a_read_token_and_keeps_health_open(served):
    body = {"request": {"history": [{"item_id": 50}]}}
    bare = httpx.post(f"{served[0]}/recommend", json=body, timeout=10)
    assert bare.status_code == 401 and bare.json()["field"] == "authorization"
    assert _post(served, body, token="x" * 40).status_code == 401
    assert httpx.get(f"{served[0]}/readyz", timeout=10).status_code == 200
    assert _post(served, body).status_code == 200


def test_recommend_returns_top_n_unseen_items_from_the_stored_model(served):
    tag = served[1]
    response = _post(served, {"request": {"history": [{"item_id": 50, "rating": 5,
                                                    "timestamp": 893286638}],
                                       "n": 7, "exclude": [1]}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == tag and len(body["items"]) == 7
    ids = [r["item_id"] for r in body["items"]]
    assert 50 not in ids and 1 not in ids and len(set(ids)) == 7
    scores = [r["score"] for r in body["items"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("body, status, fragment", [
    ({"request": {"history": [{"item_id": 99_999}]}}, 400, "history[0].item_id"),
    ({"request": {"history": []}}, 400, "history"),
    ({"request": {"history": [{"item_id": 5}], "n": 0}}, 400, "n"),
    ({"request": {"history": [{"item_id": "five"}]}}, 400, "item_id"),
    ({"request": {}}, 400, "history"),
])
def test_bad_requests_are_400s_naming_the_field(served, body, status, fragment):
    response = _post(served, body)
    assert response.status_code == status, response.text
    assert fragment in response.text


def test_bentoml_build_packages_the_service(served, tmp_path):
    tag = served[1]
    env = {**os.environ, "IREC_MODEL_TAG": tag}
    done = subprocess.run([BENTOML, "build", "-f", "serving/bentofile.yaml", "."], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    listed = subprocess.run([BENTOML, "list", "irec-interest", "-o", "json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert "irec-interest" in listed.stdout
