"""Feature definitions for the interest models, in the style of Feast's repository template.

The parquet sources under data/ are written by ``irec features build`` (see
``features/tables.py``); paths are relative to the repo path. TTLs are chosen per view:
static content never expires, behaviour expires after a year of silence (a user back after a
year is treated as cold), item trends after 90 days.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.data_format import ParquetFormat
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float32, Float64, Int64, String

STATIC = timedelta(0)  # Feast: a zero TTL never expires.
BEHAVIOUR_TTL = timedelta(days=365)
TREND_TTL = timedelta(days=90)

# The two entities every view is keyed by; ids are the normalised 1..n ids from ingest.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64,
              description="A user, by normalised id (raw id kept in users.parquet)")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64,
              description="A catalogue item, by normalised id (raw id kept in items.parquet)")

# Who the user is: demographics, when the dataset has them (MovieLens does).
user_profile_source = FileSource(name="user_profile_source", path="data/users.parquet",
                                 timestamp_field="event_timestamp")
user_profile_fv = FeatureView(
    name="user_profile", entities=[user], ttl=STATIC, source=user_profile_source,
    schema=[Field(name="age", dtype=Int64), Field(name="gender", dtype=String),
            Field(name="occupation", dtype=String), Field(name="zip_code", dtype=String)],
)

# How much and how well the user rates: cumulative, one row per distinct event time.
user_stats_source = FileSource(name="user_stats_source", path="data/user_stats.parquet",
                               timestamp_field="event_timestamp")
user_stats_fv = FeatureView(
    name="user_stats", entities=[user], ttl=BEHAVIOUR_TTL, source=user_stats_source,
    schema=[Field(name="user_event_count", dtype=Int64),
            Field(name="user_mean_rating", dtype=Float64),
            Field(name="user_last_event_ts", dtype=Int64)],
)

# The sequence the interest models read: the last N events, oldest first.
user_history_source = FileSource(name="user_history_source", path="data/user_history.parquet",
                                 timestamp_field="event_timestamp")
user_history_fv = FeatureView(
    name="user_history", entities=[user], ttl=BEHAVIOUR_TTL, source=user_history_source,
    schema=[Field(name="hist_item_ids", dtype=Array(Int64)),
            Field(name="hist_ratings", dtype=Array(Float64)),
            Field(name="hist_timestamps", dtype=Array(Int64))],
)

# What an item is.
item_profile_source = FileSource(name="item_profile_source", path="data/items.parquet",
                                 timestamp_field="event_timestamp")
item_profile_fv = FeatureView(
    name="item_profile", entities=[item], ttl=STATIC, source=item_profile_source,
    schema=[Field(name="title", dtype=String), Field(name="genres", dtype=Array(String)),
            Field(name="year", dtype=Int64)],
)

# How an item is doing: cumulative count and rating, events in the trailing window.
item_stats_source = FileSource(name="item_stats_source", path="data/item_stats.parquet",
                               timestamp_field="event_timestamp")
item_stats_fv = FeatureView(
    name="item_stats", entities=[item], ttl=TREND_TTL, source=item_stats_source,
    schema=[Field(name="item_event_count", dtype=Int64),
            Field(name="item_mean_rating", dtype=Float64),
            Field(name="item_popularity_window", dtype=Int64)],
)

# The pretrained LM's view of the item text (model recorded in data/features.json).
item_text_embedding_source = FileSource(
    name="item_text_embedding_source", path="data/item_text_embedding.parquet",
    timestamp_field="event_timestamp",
)
item_text_embedding_fv = FeatureView(
    name="item_text_embedding", entities=[item], ttl=STATIC, source=item_text_embedding_source,
    schema=[Field(name="text_embedding", dtype=Array(Float32))],
)

# Every event the events API accepted (data/event_log.py: partitioned parquet, one file per
# batch and date): offline only, for point-in-time training sets ("the user's latest event as
# of t"); the online features it changes are the views above, updated live (features/live.py).
event_log_source = FileSource(
    name="event_log_source", path="data/event_log/date=*/part-*.parquet",
    file_format=ParquetFormat(), timestamp_field="event_timestamp",
    field_mapping={"item_id": "event_item_id", "rating": "event_rating"},
)
logged_event_fv = FeatureView(
    name="logged_event", entities=[user], ttl=BEHAVIOUR_TTL, source=event_log_source,
    online=False,
    schema=[Field(name="event_id", dtype=String), Field(name="event_item_id", dtype=Int64),
            Field(name="event_rating", dtype=Float64), Field(name="kind", dtype=String),
            Field(name="request_id", dtype=String)],
)

# The request's own clock, so decay is computed against the time of the request.
request_context = RequestSource(name="request_context",
                                schema=[Field(name="request_ts", dtype=Int64)])


# Interest decay at request time: age of the last event and a weight per history event.
@on_demand_feature_view(
    sources=[user_history_fv, user_stats_fv, request_context],
    schema=[Field(name="seconds_since_last_event", dtype=Int64),
            Field(name="history_decay_weights", dtype=Array(Float64))],
    mode="python",
)
def user_decay(inputs: dict) -> dict:
    # Feast stores this function as source text and runs it without this module's globals,
    # so everything it needs is defined inside. Half-life: an event a month old weighs half
    # as much as one from now (versioned with the feature services below).
    import numpy as np

    half_life_seconds = 30 * 86_400
    since, weights = [], []
    for now, last, stamps in zip(inputs["request_ts"], inputs["user_last_event_ts"],
                                 inputs["hist_timestamps"], strict=True):
        since.append(None if last is None else max(int(now) - int(last), 0))
        ages = np.maximum(int(now) - np.asarray(stamps or [], dtype=np.int64), 0)
        weights.append(np.exp2(-ages / half_life_seconds).tolist())
    return {"seconds_since_last_event": since, "history_decay_weights": weights}


# Candidate generation reads only the user's sequence and its decay.
retrieval_v1 = FeatureService(name="retrieval_v1", features=[user_history_fv, user_decay])

# Ranking scores (user, item) pairs: user state, item content and trends, decay.
ranking_v1 = FeatureService(
    name="ranking_v1",
    features=[user_history_fv, user_stats_fv, user_profile_fv, item_profile_fv, item_stats_fv,
              item_text_embedding_fv, user_decay],
)
