"""Fraud signals and the risk score, driven by a virtual clock (``now`` is just a number here)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dce.compliance.fraud import (
    CLEAN,
    WEIGHTS,
    AniClass,
    FraudAssessment,
    FraudScorer,
    FraudSettings,
    SharedVelocity,
    classify_ani,
    combine,
)
from dce.compliance.verdict import Action, ReasonCode, Verdict

ANI = "+12125551234"
OTHER = "+13105550199"
T0 = 1_000_000.0


def number(i: int) -> str:
    """A distinct valid US number per i (NYC 212, exchange 2xx)."""
    return f"+12122{i:06d}"


def call(scorer: FraudScorer, ani: str | None = ANI, *, now: float, publisher: str | None = None,
         campaign: str | None = None, blacklisted: bool = False) -> FraudAssessment:
    return scorer.assess(ani, publisher_id=publisher, campaign_id=campaign, now=now, blacklisted=blacklisted)


# -- ANI classification ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ani", [None, "", "anonymous", "Anonymous", "restricted", "unavailable", "private", " "])
def test_anonymous_ani(ani: str | None) -> None:
    assert classify_ani(ani)[0] == AniClass.ANONYMOUS
    result = call(FraudScorer(), ani, now=T0)
    assert result.signals == (ReasonCode.ANONYMOUS_ANI,)
    assert result.risk == pytest.approx(WEIGHTS[ReasonCode.ANONYMOUS_ANI])
    assert result.findings == ()  # 0.35: between low and medium, allowed


@pytest.mark.parametrize("ani", ["123", "+1555", "+10005550100", "+19995550100", "12345678901234567"])
def test_invalid_or_unallocated_ani(ani: str) -> None:
    assert classify_ani(ani)[0] == AniClass.INVALID
    result = call(FraudScorer(), ani, now=T0)
    assert result.signals == (ReasonCode.INVALID_ANI,)
    assert result.risk == pytest.approx(0.5)
    assert result.findings == ()


def test_valid_ani_forms_are_one_caller() -> None:
    assert classify_ani("+12125551234") == (AniClass.VALID, ANI)
    assert classify_ani("2125551234") == (AniClass.VALID, ANI)
    assert classify_ani("12125551234;npdi") == (AniClass.VALID, ANI)
    assert classify_ani("+442079460958") == (AniClass.VALID, "+442079460958")
    scorer = FraudScorer()
    assert call(scorer, "+12125551234", now=T0, campaign="c1") is CLEAN
    assert call(scorer, "2125551234", now=T0 + 1, campaign="c1").signals == (ReasonCode.DUPLICATE_CALLER,)


# -- velocity -----------------------------------------------------------------------------------------------------


def test_ani_velocity_per_minute_trips_past_the_limit_and_recovers() -> None:
    scorer = FraudScorer()  # 5 calls/minute
    for i in range(5):
        assert call(scorer, now=T0 + i).signals == ()
    sixth = call(scorer, now=T0 + 5)
    assert sixth.signals == (ReasonCode.VELOCITY_ANI,)
    assert sixth.risk == pytest.approx(0.75)
    assert sixth.action is Action.FLAG
    assert [f.code for f in sixth.findings] == [ReasonCode.FRAUD_RISK, ReasonCode.VELOCITY_ANI]
    # Every call counts, flagged or not: at T0+30 the minute holds T0+1..T0+5 (five) before this one.
    assert call(scorer, now=T0 + 30).signals == (ReasonCode.VELOCITY_ANI,)
    # At T0+90.5 the minute holds only T0+30: recovered.
    assert call(scorer, now=T0 + 90.5).signals == ()


def test_ani_velocity_window_edge() -> None:
    scorer = FraudScorer(FraudSettings(ani_calls_per_minute=2, ani_calls_per_hour=100))
    call(scorer, now=T0)
    call(scorer, now=T0 + 10)
    assert call(scorer, now=T0 + 59.9).signals == (ReasonCode.VELOCITY_ANI,)
    scorer = FraudScorer(FraudSettings(ani_calls_per_minute=2, ani_calls_per_hour=100))
    call(scorer, now=T0)
    call(scorer, now=T0 + 10)
    assert call(scorer, now=T0 + 60).signals == ()  # T0 left the window: exactly 60 s is outside


def test_ani_velocity_per_hour() -> None:
    scorer = FraudScorer()  # 20 calls/hour; 4 a minute stays under the per-minute limit
    for i in range(20):
        assert call(scorer, now=T0 + i * 61).signals == ()
    assert call(scorer, now=T0 + 20 * 61).signals == (ReasonCode.VELOCITY_ANI,)
    # Recovers when the 20th-newest earlier call is an hour old.
    assert call(scorer, now=T0 + 2 * 3600).signals == ()


def test_ani_velocity_is_per_caller() -> None:
    scorer = FraudScorer()
    for i in range(5):
        call(scorer, now=T0 + i)
    assert call(scorer, OTHER, now=T0 + 5).signals == ()
    assert call(scorer, ANI, now=T0 + 5).signals == (ReasonCode.VELOCITY_ANI,)


def test_publisher_velocity_trips_and_recovers() -> None:
    scorer = FraudScorer(FraudSettings(publisher_calls_per_minute=10))
    for i in range(10):
        assert call(scorer, number(i), now=T0 + i, publisher="p1").signals == ()
    over = call(scorer, number(10), now=T0 + 10, publisher="p1")
    assert over.signals == (ReasonCode.VELOCITY_PUBLISHER,)
    assert over.action is Action.FLAG
    assert call(scorer, number(11), now=T0 + 11, publisher="p2").signals == ()  # another publisher
    assert call(scorer, number(12), now=T0 + 80, publisher="p1").signals == ()  # the window slid past


# -- duplicates -------------------------------------------------------------------------------------------------


def test_duplicate_caller_within_window_vs_after() -> None:
    scorer = FraudScorer()  # 3600 s
    assert call(scorer, now=T0, campaign="c1") is CLEAN
    dup = call(scorer, now=T0 + 600, campaign="c1")
    assert dup.signals == (ReasonCode.DUPLICATE_CALLER,)
    assert dup.risk == pytest.approx(0.3)
    assert dup.findings == ()
    assert call(scorer, now=T0 + 700, campaign="c2").signals == ()  # another campaign
    assert call(scorer, OTHER, now=T0 + 800, campaign="c1").signals == ()  # another caller
    assert call(scorer, now=T0 + 600 + 3600, campaign="c1").signals == ()  # window passed since the last call


def test_no_campaign_no_duplicate() -> None:
    scorer = FraudScorer()
    call(scorer, now=T0)
    assert call(scorer, now=T0 + 1).signals == ()
    assert call(scorer, now=T0 + 2, campaign="c1").signals == ()  # the first call with a campaign
    assert call(scorer, now=T0 + 3, campaign="c1").signals == (ReasonCode.DUPLICATE_CALLER,)


# -- conversion clusters ----------------------------------------------------------------------------------------


def test_cluster_fires_when_calls_end_just_past_conversion() -> None:
    scorer = FraudScorer()
    fired = [scorer.record_completed("p1", 61 + i % 5, 60, now=T0 + i) for i in range(30)]
    assert fired.index(True) == 19  # needs cluster_min_calls (20) answered calls first
    assert scorer.cluster_share("p1") == (30, 30)
    result = call(scorer, now=T0 + 100, publisher="p1")
    assert result.signals == (ReasonCode.CONVERSION_CLUSTER,)
    assert result.risk == pytest.approx(0.4)
    assert call(scorer, OTHER, now=T0 + 101, publisher="p2").signals == ()


def test_cluster_does_not_fire_on_spread_durations() -> None:
    scorer = FraudScorer()
    for i in range(60):
        assert not scorer.record_completed("p1", 5 + i * 13 % 600, 60, now=T0 + i)
    hits, answered = scorer.cluster_share("p1")
    assert answered == 60 and hits < 0.5 * answered
    assert call(scorer, now=T0 + 100, publisher="p1").signals == ()


def test_cluster_share_boundary_and_recovery() -> None:
    scorer = FraudScorer(FraudSettings(cluster_window_calls=20))
    for i in range(10):
        scorer.record_completed("p1", 60 + 10, 60, now=T0 + i)  # the margin's edges count
        scorer.record_completed("p1", 59, 60, now=T0 + i)  # short of the conversion: not a cluster hit
    assert scorer.cluster_share("p1") == (10, 20)
    assert call(scorer, now=T0 + 50, publisher="p1").signals == (ReasonCode.CONVERSION_CLUSTER,)
    # The ring keeps the last 20 calls: honest calls push the clustered ones out.
    for i in range(20):
        scorer.record_completed("p1", 300, 60, now=T0 + 60 + i)
    assert scorer.cluster_share("p1") == (0, 20)
    assert call(scorer, OTHER, now=T0 + 100, publisher="p1").signals == ()


def test_cluster_ignores_campaigns_without_conversion_duration() -> None:
    scorer = FraudScorer()
    for i in range(30):
        assert not scorer.record_completed("p1", 5, None, now=T0 + i)
        assert not scorer.record_completed("p1", 5, 0, now=T0 + i)
    assert scorer.cluster_share("p1") == (0, 0)


# -- thresholds -> actions ------------------------------------------------------------------------------------


def test_thresholds_map_to_allow_flag_reject_with_seed_defaults() -> None:
    scorer = FraudScorer()
    # allow: a single weak signal
    assert call(scorer, "anonymous", now=T0).action is Action.ALLOW
    # flag: invalid + duplicate = 1 - 0.5 * 0.7 = 0.65
    call(scorer, "123", now=T0, campaign="c1")
    flagged = call(scorer, "123", now=T0 + 1, campaign="c1")
    assert flagged.risk == pytest.approx(0.65)
    assert flagged.action is Action.FLAG
    assert flagged.findings[0].code is ReasonCode.FRAUD_RISK
    assert {f.code for f in flagged.findings[1:]} == {ReasonCode.INVALID_ANI, ReasonCode.DUPLICATE_CALLER}
    assert all(f.action is Action.FLAG for f in flagged.findings)
    # reject: a flood into one campaign (velocity + duplicate = 1 - 0.25 * 0.7 = 0.825)
    for i in range(5):
        call(scorer, now=T0 + i, campaign="c9")
    rejected = call(scorer, now=T0 + 5, campaign="c9")
    assert rejected.risk == pytest.approx(0.825)
    assert rejected.action is Action.REJECT
    verdict = Verdict.of(rejected.findings, risk=rejected.risk)
    assert verdict.action is Action.REJECT
    assert verdict.codes == (ReasonCode.FRAUD_RISK, ReasonCode.VELOCITY_ANI, ReasonCode.DUPLICATE_CALLER)
    assert verdict.reason == "fraud_risk: risk 0.82: velocity_ani, duplicate_caller"


def test_blacklisted_rejects() -> None:
    result = call(FraudScorer(), now=T0, blacklisted=True)
    assert result.risk == 1.0
    assert result.action is Action.REJECT
    assert [f.code for f in result.findings] == [ReasonCode.FRAUD_RISK, ReasonCode.BLOCKED_ANI]


def test_custom_thresholds() -> None:
    scorer = FraudScorer(FraudSettings(low=0.1, medium=0.3, high=0.45))
    assert call(scorer, "anonymous", now=T0).action is Action.FLAG
    assert call(scorer, "123", now=T0).action is Action.REJECT


def test_disabled_scores_nothing() -> None:
    scorer = FraudScorer(FraudSettings(enabled=False))
    assert call(scorer, None, now=T0, blacklisted=True) is CLEAN
    assert scorer.sizes()["callers"] == 0


def test_settings_from_mapping() -> None:
    seed = {"enabled": True, "low": 0.3, "medium": 0.6, "high": 0.8, "ani_calls_per_minute": 5,
            "ani_calls_per_hour": 20, "publisher_calls_per_minute": 600, "duplicate_window_s": 3600,
            "cluster_margin_s": 10, "cluster_share": 0.5, "cluster_min_calls": 20}
    assert FraudSettings.from_mapping(seed) == FraudSettings()
    with pytest.raises(TypeError, match="bogus"):
        FraudSettings.from_mapping({**seed, "bogus": 1})
    with pytest.raises(ValueError, match="thresholds"):
        FraudSettings(low=0.7, medium=0.6)
    with pytest.raises(ValueError):
        FraudSettings(ani_calls_per_minute=0)


def test_settings_mirror_the_config_section() -> None:
    from dce.exchange.config import FraudConfig  # the exchange maps the config to settings like this

    assert FraudSettings.from_mapping(FraudConfig().model_dump()) == FraudSettings()


# -- memory ---------------------------------------------------------------------------------------------------


def test_memory_bounded_with_many_distinct_callers_over_time() -> None:
    scorer = FraudScorer()  # horizon: one hour
    rate = 5  # calls per second, each from a new caller
    bound = rate * 3600 * 33 // 32 + 4096 + 2
    for i in range(rate * 3 * 3600):  # three hours
        call(scorer, number(i), now=T0 + i / rate, publisher=f"p{i % 3}", campaign="c1")
        if scorer.sizes()["callers"] > bound:
            pytest.fail(f"callers grew past one horizon at i={i}: {scorer.sizes()}")
    # The amortised expiry in assess alone keeps it at about one horizon of callers (first calls are freed in
    # sweeps every 4096 new callers, once 1/32 of a horizon past it).
    assert scorer.sizes()["callers"] <= bound
    # The sweep drops everything once time moves on.
    scorer.expire(T0 + 4 * 3600 + 1)
    scorer.expire(T0 + 30 * 86400)
    assert scorer.sizes() == {"callers": 0, "publishers": 0, "clusters": 0}


def test_expire_keeps_what_windows_still_see() -> None:
    scorer = FraudScorer()
    call(scorer, now=T0, publisher="p1", campaign="c1")
    scorer.record_completed("p1", 65, 60, now=T0)
    assert scorer.expire(T0 + 30) == 0
    assert scorer.sizes() == {"callers": 1, "publishers": 1, "clusters": 1}
    scorer.expire(T0 + 61)  # the publisher's minute is over; the caller's hour is not
    assert scorer.sizes() == {"callers": 1, "publishers": 0, "clusters": 1}
    assert call(scorer, now=T0 + 100, campaign="c1").signals == (ReasonCode.DUPLICATE_CALLER,)


def test_many_campaigns_per_caller_stay_bounded() -> None:
    scorer = FraudScorer(FraudSettings(ani_calls_per_hour=10_000, ani_calls_per_minute=10_000))
    for i in range(500):
        call(scorer, now=T0 + i * 60, campaign=f"c{i}")
    caller = scorer._callers[ANI]
    assert caller.camps is not None
    assert len(caller.camps) <= 61 + FraudScorer._CAMPAIGNS_PRUNE_AT
    assert call(scorer, now=T0 + 499 * 60 + 1, campaign="c499").signals == (ReasonCode.DUPLICATE_CALLER,)
    assert call(scorer, now=T0 + 499 * 60 + 2, campaign="c0").signals == ()


def test_duplicates_across_several_campaigns() -> None:
    scorer = FraudScorer()
    call(scorer, now=T0, campaign="c1")
    call(scorer, now=T0 + 20)  # no campaign: leaves the duplicate history alone
    assert call(scorer, now=T0 + 40, campaign="c2").signals == ()
    assert call(scorer, now=T0 + 60, campaign="c1").signals == (ReasonCode.DUPLICATE_CALLER,)
    assert call(scorer, now=T0 + 80, campaign="c2").signals == (ReasonCode.DUPLICATE_CALLER,)
    assert call(scorer, now=T0 + 100, campaign="c3").signals == ()
    assert call(scorer, now=T0 + 60 + 3600, campaign="c1").signals == ()
    assert call(scorer, now=T0 + 100 + 3599, campaign="c3").signals == (ReasonCode.DUPLICATE_CALLER,)


# -- properties -------------------------------------------------------------------------------------------------

CODES = sorted(WEIGHTS)
Call = tuple[str | None, str | None, str | None, float, bool]  # ani, publisher, campaign, seconds later, blacklisted


@given(st.sets(st.sampled_from(CODES)), st.sampled_from(CODES))
@example({ReasonCode.ANONYMOUS_ANI, ReasonCode.CONVERSION_CLUSTER, ReasonCode.DUPLICATE_CALLER,
          ReasonCode.INVALID_ANI}, ReasonCode.ANONYMOUS_ANI)  # a set's own order once made this 1e-16 lower
def test_risk_within_unit_interval_and_monotone(signals: set[ReasonCode], extra: ReasonCode) -> None:
    risk = combine(signals)
    assert 0.0 <= risk <= 1.0
    assert combine(signals | {extra}) >= risk
    assert combine(list(signals)[::-1] + [extra] * (extra in signals)) == risk  # order and repeats do not matter
    if signals:
        assert risk >= max(WEIGHTS[code] for code in signals) - 1e-12


@given(st.lists(st.tuples(st.sampled_from([ANI, OTHER, None, "123", "anonymous"]),
                          st.sampled_from(["p1", "p2", None]), st.sampled_from(["c1", "c2", None]),
                          st.floats(0, 120), st.booleans()), max_size=60))
def test_assess_risk_always_in_unit_interval(calls: list[Call]) -> None:
    scorer = FraudScorer(FraudSettings(ani_calls_per_minute=2, ani_calls_per_hour=4, publisher_calls_per_minute=5))
    for i in range(25):
        scorer.record_completed("p1", 60 + i % 10, 60, now=T0)
    now = T0
    for ani, publisher, campaign, step, blacklisted in calls:
        now += step
        result = call(scorer, ani, now=now, publisher=publisher, campaign=campaign, blacklisted=blacklisted)
        assert 0.0 <= result.risk <= 1.0
        assert result.risk == pytest.approx(combine(result.signals))
        expected = (Action.REJECT if result.risk >= 0.8 else Action.FLAG if result.risk >= 0.6 else Action.ALLOW)
        assert result.action is expected
        assert (result.findings == ()) == (expected is Action.ALLOW)


# -- velocity counted by every node (passed in) ------------------------------------------------------------------


def test_shared_counts_fire_velocity_this_node_has_not_seen() -> None:
    scorer = FraudScorer()  # 5/min, 20/h per caller, 600/min per publisher
    assert call(scorer, now=T0).signals == ()
    at_limit = SharedVelocity(ani_minute=5, ani_hour=5, publisher_minute=600)  # this call is the 5th: not over
    assert scorer.assess(ANI, publisher_id="p1", campaign_id=None, now=T0 + 1, shared=at_limit).signals == ()
    minute = SharedVelocity(ani_minute=5.5, ani_hour=6)
    assert scorer.assess(ANI, publisher_id=None, campaign_id=None, now=T0 + 2,
                         shared=minute).signals == (ReasonCode.VELOCITY_ANI,)
    hour = SharedVelocity(ani_minute=1, ani_hour=21)
    assert scorer.assess(ANI, publisher_id=None, campaign_id=None, now=T0 + 3,
                         shared=hour).signals == (ReasonCode.VELOCITY_ANI,)
    publisher = SharedVelocity(publisher_minute=601)
    assert scorer.assess(OTHER, publisher_id="p1", campaign_id=None, now=T0 + 4,
                         shared=publisher).signals == (ReasonCode.VELOCITY_PUBLISHER,)


def test_unknown_shared_counts_leave_this_nodes_own_velocity() -> None:
    scorer = FraudScorer()
    for i in range(5):
        assert scorer.assess(ANI, publisher_id=None, campaign_id=None, now=T0 + i,
                             shared=SharedVelocity()).signals == ()
    assert scorer.assess(ANI, publisher_id=None, campaign_id=None, now=T0 + 5,
                         shared=SharedVelocity(ani_minute=1, ani_hour=1)).signals == (ReasonCode.VELOCITY_ANI,)


def test_a_hundred_thousand_distinct_callers_cost_tens_of_bytes_each() -> None:
    """An hour of new callers at 300 CPS is a million: their history must be compact, not ~200 B objects."""
    import tracemalloc

    from dce import caches

    numbers = [number(i) for i in range(100_000)]
    caches.resize({"numbers": len(numbers)})  # every number classified before measuring (the cache is not measured)
    for ani in numbers:
        classify_ani(ani, FraudSettings().region)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        scorer = FraudScorer()
        for i, ani in enumerate(numbers):
            call(scorer, ani, now=T0 + i / 300, publisher="p1", campaign="c1")
        per_caller = (tracemalloc.get_traced_memory()[0] - before) / len(numbers)
    finally:
        tracemalloc.stop()
        caches.resize({"numbers": caches.DEFAULT_SIZES["numbers"]})
    assert per_caller < 48, f"{per_caller:.0f} bytes per caller"
    assert call(scorer, numbers[7], now=T0 + 1000, campaign="c1").signals == (ReasonCode.DUPLICATE_CALLER,)
    assert call(scorer, numbers[8], now=T0 + 1000, campaign="c2").signals == ()
