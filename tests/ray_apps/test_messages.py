"""The Ingress and the messages stay light: no torch, Transformers or Feast in the Ingress.

A stage's reply is unpickled in the caller, which imports the module that defines its class.
When ``Ranked`` lived in ``ray_apps.ranking``, the Ingress's first request imported torch,
Transformers and Feast on its event loop and timed out (408 after Serve's 10 s).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

from ray_apps import intent, messages, ranking, retrieval
from tests.helpers import ROOT

HEAVY = ("torch", "transformers", "feast", "bentoml", "faiss")


def _modules_after_import(module: str) -> set[str]:
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", ["ray_apps.messages", "ray_apps.ingress"])
def test_importing_loads_no_model_or_store_library(module):
    loaded = _modules_after_import(module)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize(("stage", "method"), [(retrieval.Retrieval, "__call__"),
                                               (intent.Intent, "__call__"),
                                               (ranking.Ranking, "__call__")])
def test_what_a_stage_returns_is_a_message(stage, method):
    returned = inspect.signature(getattr(stage.func_or_class, method)).return_annotation
    defined = {name for name, cls in inspect.getmembers(messages, inspect.isclass)
               if cls.__module__ == messages.__name__}
    assert returned in defined, (stage.name, returned, sorted(defined))
