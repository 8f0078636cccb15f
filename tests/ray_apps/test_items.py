"""Items added at run time, on the live app with a trained model: an id each, logged, online,
and served from their text before any retraining.

The module trains the tiny preset (Ray Train, about a minute), serves it for its tests and
puts the session's model back at the end. The item it adds stays in the session's workspace
(the other stages serve it too, from the untrained model's vectors).
"""

from __future__ import annotations

import pandas as pd
import pytest
import requests

from data.catalogue_log import CatalogueLog
from features.store import online_features, open_store
from irec.config import PlatformConfig
from irec.pipeline import package_model, train
from ray_apps.app import deploy
from ray_apps.client import APIError, GRPCClient, HTTPClient
from ray_apps.schemas import (
    EventIn,
    EventsRequest,
    HistoryEvent,
    ItemIn,
    ItemsRequest,
    RecommendRequest,
)
from training.train import new_run_id, prepare_data

SCI_FI = [50, 172, 181, 82, 89, 96, 222, 227, 228, 229, 230, 271, 449, 450]  # ML-100K ids
OPERA = ItemIn(raw_item_id="space-opera-1", title="Starfall",
               text="A space opera about rebels fighting a galactic empire across the stars.")


@pytest.fixture(scope="module")
def trained(served, app_args, ml100k_workspace, dataset_end):
    """The app serving a freshly trained tiny model (the session's model back afterwards)."""
    quiet = lambda _: None  # noqa: E731
    cfg = PlatformConfig.load("configs/tiny.yaml",
                              {"features.repo_path": str(ml100k_workspace.repo_path)})
    data = prepare_data(cfg.features, cfg.training, log=quiet)
    tag = package_model(cfg, train(cfg, data, new_run_id(), quiet), data, {}, quiet,
                        pd.Timestamp(dataset_end, unit="s", tz="UTC"))
    serving = app_args.serving.model_copy(update={"model_tag": tag})
    deploy({"irec": app_args.model_copy(update={"serving": serving})})
    yield tag
    deploy({"irec": app_args})


@pytest.fixture(scope="module")
def opera(trained, served, tokens) -> int:
    """The space opera's item id, added through POST /items."""
    added = HTTPClient(served.http, token=tokens["write"]).add_items(ItemsRequest(items=[OPERA]))
    assert [(i.raw_item_id, i.new) for i in added.items] == [("space-opera-1", True)]
    return added.items[0].item_id


def _rank(answer, item: int) -> int | None:
    ids = [i.item_id for i in answer.items]
    return ids.index(item) + 1 if item in ids else None


def test_an_added_item_gets_the_next_id_is_logged_and_online(opera, served, tokens,
                                                             ml100k_workspace):
    items = pd.read_parquet(ml100k_workspace.data_dir / "items.parquet")
    assert opera == int(items.item_id.max()) + 1  # nothing renumbered: the next id
    writer = HTTPClient(served.http, token=tokens["write"])
    again = writer.add_items(ItemsRequest(items=[OPERA, ItemIn(raw_item_id="50", title="x")]))
    assert [(i.item_id, i.new) for i in again.items] == [(opera, False), (50, False)]
    logged = CatalogueLog.of(ml100k_workspace.data_dir).read().set_index("raw_item_id")
    assert logged.loc["space-opera-1", "item_id"] == opera
    assert "50" not in logged.index  # a dataset item is named, never re-added
    got = online_features(open_store(ml100k_workspace), [{"item_id": opera}],
                          ["item_profile:title", "item_text_embedding:text_embedding"])
    assert got["title"] == ["Starfall"] and len(got["text_embedding"][0]) == 384


def test_a_new_item_is_recommended_to_a_sci_fi_history_and_marked_new(opera, served,
                                                                      dataset_end):
    history = [HistoryEvent(item_id=i, timestamp=dataset_end - 3600 + 60 * k, rating=5.0)
               for k, i in enumerate(SCI_FI)]
    answer = served.client().recommend(RecommendRequest(history=history, n=50))
    rank = _rank(answer, opera)
    assert rank is not None, [i.title for i in answer.items]
    found = answer.items[rank - 1]
    assert found.title == "Starfall" and found.raw_item_id == "space-opera-1"
    assert found.explanation.new
    assert not any(i.explanation.new for i in answer.items if i.item_id != opera)


def test_a_new_item_is_found_by_the_query_space_adventure(opera, served):
    answer = served.client().recommend(RecommendRequest(user_id=7, n=50,
                                                        query="space adventure"))
    assert _rank(answer, opera) is not None, [i.title for i in answer.items]


def test_events_may_name_a_new_item_at_once_and_it_is_then_seen(opera, served, tokens,
                                                                dataset_end):
    user = 900_300
    writer = HTTPClient(served.http, token=tokens["write"])
    logged = writer.log_events(EventsRequest(events=[
        EventIn(event_id=f"opera-{k}", user_id=user, item_id=item,
                timestamp=dataset_end - 100 + k, rating=5.0)
        for k, item in enumerate([50, 172, opera])]))
    assert len(logged.accepted) == 3
    answer = served.client().recommend(RecommendRequest(user_id=user, n=50,
                                                        query="space adventure"))
    assert not {50, 172, opera} & {i.item_id for i in answer.items}


def test_bad_items_are_refused_naming_the_field_and_need_the_write_scope(served, tokens):
    def post(body: dict, token: str) -> requests.Response:
        return requests.post(f"{served.http}/items", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {token}"})

    refused = post({"items": [{"raw_item_id": "x-1"}]}, tokens["write"])
    assert refused.status_code == 422 and refused.json()["field"] == "items.0.title"
    spaced = post({"items": [{"raw_item_id": "has space", "title": "t"}]}, tokens["write"])
    assert spaced.status_code == 422 and spaced.json()["field"] == "items.0.raw_item_id"
    assert post({"items": []}, tokens["write"]).status_code == 422
    assert post({"items": [{"raw_item_id": "x-2", "title": "t"}]}, tokens["read"]).status_code \
        == 403


def test_grpc_add_items_and_the_cli_add_like_http(trained, served, tokens, tmp_path,
                                                  ml100k_workspace):
    from typer.testing import CliRunner

    from irec.cli import app

    client = GRPCClient(served.grpc, token=tokens["write"])
    added = client.add_items(ItemsRequest(items=[ItemIn(
        raw_item_id="grpc-western", title="Dust Road", genres=["Western"], year=2026,
        text="A lone rider crosses the desert.")]))
    assert [(i.raw_item_id, i.new) for i in added.items] == [("grpc-western", True)]
    with pytest.raises(APIError) as refused:
        client.add_items(ItemsRequest.model_construct(items=[ItemIn.model_construct(
            raw_item_id="no title", title="", genres=[], year=None, text="")]))
    assert refused.value.status == "INVALID_ARGUMENT" and "items.0" in refused.value.message
    with pytest.raises(APIError) as reader:
        GRPCClient(served.grpc, token=tokens["read"]).add_items(
            ItemsRequest(items=[ItemIn(raw_item_id="r-1", title="t")]))
    assert reader.value.status == "PERMISSION_DENIED"

    listed = tmp_path / "items.csv"
    listed.write_text("raw_item_id,title,genres,text\ncli-1,Tide,Drama|Romance,By the sea\n"
                      "grpc-western,Dust Road,Western,\n")
    args = ["items", "add", "--file", str(listed), "--url", served.http, "--token",
            tokens["write"]]
    sent = CliRunner().invoke(app, args)
    assert sent.exit_code == 0, sent.output
    assert "1 new, 1 known before" in sent.output, sent.output
    logged = CatalogueLog.of(ml100k_workspace.data_dir).read().set_index("raw_item_id")
    assert list(logged.loc["cli-1", "genres"]) == ["Drama", "Romance"]
    bad = tmp_path / "bad.csv"
    bad.write_text("raw_item_id,title\nok-1,Fine\nbad id,Broken\n")
    refused = CliRunner().invoke(app, [*args[:2], "--file", str(bad), *args[4:]])
    assert refused.exit_code != 0 and "row 3" in refused.output, refused.output


def test_after_retraining_an_item_known_only_from_the_logs_is_trained_on_and_served(
        opera, served, tokens, ml100k_workspace, dataset_end, tmp_path):
    """The steps of `irec retrain run` on the live workspace: the added item and the logged
    events naming it are folded in, trained on, and the new model is rolled out."""
    from data.ingest import ingest
    from features.build import build
    from features.store import apply
    from irec.pipeline import retrain
    from ray_apps.rollout import rollout
    from serving import package

    quiet = lambda _: None  # noqa: E731
    month_before = dataset_end - 30 * 86_400  # before the held-out week: trained on
    users = range(900_500, 900_540)
    events = [EventIn(event_id=f"retrain-{user}-{k}", user_id=user, item_id=item,
                      timestamp=month_before + 3600 * n + 60 * k, rating=5.0)
              for n, user in enumerate(users) for k, item in enumerate([50, opera, 172, 181, 82])]
    writer = HTTPClient(served.http, token=tokens["write"])
    assert len(writer.log_events(EventsRequest(events=events)).accepted) == len(events)

    cfg = PlatformConfig.load("configs/tiny.yaml", {
        "features.repo_path": str(ml100k_workspace.repo_path),
        "training.storage_path": str(tmp_path / "runs")})
    ingest(cfg.ingest, cfg.features.data_dir, log=quiet)
    items = pd.read_parquet(ml100k_workspace.data_dir / "items.parquet").set_index("item_id")
    assert items.loc[opera, "raw_item_id"] == "space-opera-1"  # folded in, same id
    build(cfg.features, log=quiet)
    apply(open_store(cfg.features), log=quiet)
    report = retrain(cfg, log=quiet, cutoff=pd.Timestamp(dataset_end, unit="s", tz="UTC"))
    model = package.load(report["model"])
    assert model.model.cfg.num_items >= opera
    assert "space-opera-1" in set(model.items.raw_item_id)

    rollout(report["model"], "irec", timeout_s=300)  # whatever the gate said: serve it
    history = [HistoryEvent(item_id=50, timestamp=dataset_end - 3600, rating=5.0)]
    answer = served.client().recommend(RecommendRequest(history=history, n=50))
    rank = _rank(answer, opera)
    assert rank is not None, [i.title for i in answer.items]
    assert answer.model == report["model"] and not answer.items[rank - 1].explanation.new
