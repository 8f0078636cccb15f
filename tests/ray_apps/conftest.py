"""One running Serve application per test session: real Ray Serve, Feast, BentoML model.

The model is real-sized but untrained (these tests are about serving, not quality). The
serving clock is pinned to the end of ML-100K (1998), so users are within the feature TTL.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import pandas as pd
import pytest

from ray_apps.client import HTTPClient
from ray_apps.config import STAGES, AppArgs, DeploymentConfig, ServingConfig
from serving import package
from serving.auth import AuthConfig, create_token
from tests.helpers import free_port


class Served(NamedTuple):
    """The running app: its HTTP url, gRPC target and a read-scope token."""

    http: str
    grpc: str
    token: str

    def client(self) -> HTTPClient:
        return HTTPClient(self.http, token=self.token)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def metadata(self, application: str = "irec") -> tuple[tuple[str, str], ...]:
        return (("application", application), ("authorization", f"Bearer {self.token}"))


def save_model(untrained, seed_offset: float = 0.0, services: dict | None = None) -> str:
    model, data, items, hashes = untrained
    if seed_offset:
        model = copy.deepcopy(model)
        for p in model.parameters():  # a different "version": shifted weights
            p.data.add_(seed_offset)
    return package.save(model, items, metrics={"val_ndcg@10": 0.01},
                        dataset_fingerprint="0" * 64, feature_services=services or hashes,
                        genre_names=data.genre_names, log=lambda _: None)


@pytest.fixture(scope="session")
def dataset_end(ml100k_workspace) -> int:
    events = pd.read_parquet(ml100k_workspace.data_dir / "events.parquet")
    return int(events["event_timestamp"].max().timestamp()) + 1


@pytest.fixture(scope="session")
def model_tag(untrained) -> str:
    return save_model(untrained)


@pytest.fixture(scope="session")
def auth(tmp_path_factory) -> AuthConfig:
    """A token file of the test session: ``reader`` (read) and ``writer`` (write)."""
    return AuthConfig(tokens_file=str(tmp_path_factory.mktemp("auth") / "tokens.yaml"))


@pytest.fixture(scope="session")
def tokens(auth) -> dict[str, str]:
    return {"read": create_token(auth, "reader", ["read"]),
            "write": create_token(auth, "writer", ["write"])}


@pytest.fixture(scope="session")
def app_args(ml100k_workspace, model_tag, auth, tokens) -> AppArgs:
    small = DeploymentConfig(ray_actor_options={"num_cpus": 0.1})
    return AppArgs(features=ml100k_workspace, serving=ServingConfig(
        model_tag=model_tag, clock="dataset_end", http_port=free_port(),
        grpc_port=free_port(), deployments={s: small for s in STAGES}, auth=auth))


@pytest.fixture(scope="session")
def served(ray_cluster, app_args, tokens) -> Served:
    """The running application (see ``Served``)."""
    from ray import serve

    from ray_apps.app import start

    start(app_args)
    serving = app_args.serving
    yield Served(f"http://127.0.0.1:{serving.http_port}", f"127.0.0.1:{serving.grpc_port}",
                 tokens["read"])
    serve.shutdown()
