"""Safe rollouts of the live app: tags pinned, targets verified before the app is touched,
a failed rollout put back, ``--undo``, and no request lost on the way."""

from __future__ import annotations

import os
import signal

import pytest
from ray import serve
from ray.experimental import internal_kv

from ray_apps import pins
from ray_apps.app import apply, deploy, serve_config
from ray_apps.rollout import (
    RolloutFailed,
    RolloutRefused,
    deployed_config,
    rollout,
    served_tag,
    undo,
)
from ray_apps.schemas import RecommendRequest
from serving import package
from tests.helpers import RequestStream, replica_pids, wait_until
from tests.ray_apps.conftest import save_model


@pytest.fixture(scope="module")
def versions(served, app_args, untrained) -> tuple[str, str]:
    """Two servable versions; the app serves the first. The session's app and champion are
    put back afterwards."""
    champions = package.store_home() / "irec-champions.json"
    before = champions.read_text() if champions.exists() else None
    second = save_model(untrained, seed_offset=0.01)
    yield app_args.serving.model_tag, second
    deploy({"irec": app_args})
    if before is None:
        champions.unlink(missing_ok=True)
    else:
        champions.write_text(before)


def _deployed_at() -> float:
    return serve.status().applications["irec"].last_deployed_time_s


def test_champion_is_pinned_and_a_restarted_replica_keeps_its_version(versions, served,
                                                                       app_args):
    first, second = versions
    assert package.promote(first, force=True).promoted
    on_champion = app_args.serving.model_copy(update={"model_tag": "champion"})
    deploy({"irec": app_args.model_copy(update={"serving": on_champion})})
    assert served_tag(deployed_config(), "irec") == first  # concrete, not "champion"

    assert package.promote(second, force=True).promoted  # a nightly promote moves the tag
    assert _kill_retrieval_and_ask(served) == first  # it did not follow the champion


def _kill_retrieval_and_ask(served) -> str:
    """SIGKILL every Retrieval replica; the model tag of the first answer after the restart."""
    old = replica_pids("irec", "Retrieval")
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: set(replica_pids("irec", "Retrieval")) - set(old)
               and serve.status().applications["irec"].status == "RUNNING", 180,
               "a new Retrieval replica")
    return wait_until(lambda: served.client().recommend(RecommendRequest(user_id=42, n=3)),
                      120, "an answer from the restarted replica", ignore=(Exception,)).model


def test_a_broken_target_is_refused_before_the_app_is_touched(versions, untrained):
    first, _ = versions
    bad = save_model(untrained, services={"retrieval_v1": "0" * 64, "ranking_v1": "0" * 64})
    at = _deployed_at()
    for tag, reason in ((bad, "ContractError"), ("interest:doesnotexist", "NotFound")):
        with pytest.raises(RolloutRefused, match=reason):
            rollout(tag)
    assert _deployed_at() == at and served_tag(deployed_config(), "irec") == first


def test_a_rollout_not_running_in_time_puts_the_previous_version_back(versions):
    first, second = versions
    with pytest.raises(RolloutFailed, match=f"serves {first} again"):
        rollout(second, timeout_s=0.001)
    assert served_tag(deployed_config(), "irec") == first
    assert serve.status().applications["irec"].status == "RUNNING"


def test_rollout_and_undo_under_a_stream_of_requests_lose_none(versions, served):
    from typer.testing import CliRunner

    from irec.cli import app

    first, second = versions
    with RequestStream(served.client()) as stream:
        stream.wait_for(5, 120, "answers before the rollout")
        rolled = rollout(second)
        assert (rolled.previous, rolled.current) == (first, second)
        stream.wait_for(10, 300, "answers after it")
        back = CliRunner().invoke(app, ["rollout", "--local", "--undo"])
        assert back.exit_code == 0, back.output
        assert f"runs {first} (was {second}" in back.output, back.output
        stream.wait_for(10, 300, "answers after undo")
    seen, failures = stream.seen, stream.failures
    assert not failures, failures[:3]
    assert second in seen and seen[-1] == first
    assert served_tag(deployed_config(), "irec") == first
    assert undo().current == second  # the undo was itself a rollout: undo goes forward again


def test_a_config_naming_champion_is_pinned_by_the_replicas(versions, served, app_args):
    """What KubeRay applies from the chart's default values: ``model_tag: champion`` in the
    stages' user_config, not resolved by ``deploy``."""
    first, second = versions
    assert package.promote(first, force=True).promoted
    on = {tag: app_args.model_copy(update={"serving": app_args.serving.model_copy(
        update={"model_tag": tag})}) for tag in ("champion", first)}
    apply(serve_config({"irec": on["champion"]}))
    assert served_tag(deployed_config(), "irec") == "champion"
    assert served.client().recommend(RecommendRequest(user_id=42, n=3)).model == first
    assert internal_kv._internal_kv_get("irec/champion", namespace=pins.NAMESPACE) == \
        first.encode()

    assert package.promote(second, force=True).promoted
    assert _kill_retrieval_and_ask(served) == first  # the pin, not the new champion

    # a rollout to a concrete tag clears the pin: naming champion again resolves afresh
    apply(serve_config({"irec": on[first]}))
    assert internal_kv._internal_kv_get("irec/champion", namespace=pins.NAMESPACE) is None
