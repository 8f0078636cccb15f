"""Values cases of the chart tests and helpers to pick objects out of a render.

Cases: the defaults (plus the one value without a default, the Redis Secret's name), every
documented profile, and the object-storage model delivery on top of the CPU profile.
"""

from __future__ import annotations

from irec.k8s.render import merge_values, profile_values, profiles

ROOT_VALUES = {"redis": {"auth": {"existingSecret": "irec-redis"}}}
OBJECT_STORE = {"modelStore": {"mode": "objectStore",
                               "objectStore": {"url": "s3://models/irec",
                                               "credentialsSecret": "irec-s3"}},
                "serving": {"modelTag": "interest:abc123"}}


def case_values(case: str) -> dict:
    if case == "default":
        return ROOT_VALUES
    if case == "object-store":
        return merge_values(profile_values("cpu"), OBJECT_STORE)
    return profile_values(case)


CASES = ["default", *profiles(), "object-store"]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
