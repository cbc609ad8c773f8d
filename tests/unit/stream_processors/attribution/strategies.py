"""Shared hypothesis strategies and settings for the attribution unit tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from stream_processors.attribution.models import Touch

CHANNELS = ("kol", "brand", "feed", "search")

# Derandomized and database-free: the suite must give the same verdict on every run and must not
# write a .hypothesis/ folder into the repository.
DETERMINISTIC = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)

times = st.floats(min_value=0.0, max_value=1_000_000.0, allow_nan=False, allow_infinity=False)

touches = st.builds(
    Touch,
    at=times,
    campaign_id=st.sampled_from(("c1", "c2", "c3")),
    channel=st.sampled_from(CHANNELS),
    creative_id=st.sampled_from(("cr1", "cr2")),
    creator_id=st.one_of(st.none(), st.sampled_from(("k1", "k2"))),
    engaged=st.booleans(),
)

touch_lists = st.lists(touches, min_size=1, max_size=12)

totals = st.one_of(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=-(10**12), max_value=10**18),
)

channel_paths = st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=8)

# Up to 25 paths with (conversions, nulls) of 0-5 each, as MarkovChain.from_paths takes them.
path_counts = st.lists(
    st.tuples(channel_paths, st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=5)),
    min_size=1,
    max_size=25,
)
