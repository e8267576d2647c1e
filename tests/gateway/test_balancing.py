"""The order of a model's deployments per strategy (apps/gateway/upstream/balancing.py):
rendezvous hashing's stability and weights, the health view, the board's counts."""

import time

import pytest

from apps.gateway.backends import adapter_for
from apps.gateway.caches import DeploymentInfo, ModelInfo
from apps.gateway.upstream.balancing import (
    BalanceBoard,
    in_flight,
    order,
    rendezvous,
)

KEYS = range(1, 20_001)


def deployment(id_: int, weight: int = 1) -> DeploymentInfo:
    adapter = adapter_for("openai")
    return DeploymentInfo(
        id=id_,
        backend=f"b{id_}",
        adapter=adapter,
        speaks=adapter.speaks,
        base_url="http://127.0.0.1:9/v1",
        headers={},
        upstream_model=f"m{id_}",
        weight=weight,
        timeout_s=1,
        connect_timeout_s=1,
    )


def model(strategy: str, *deployments: DeploymentInfo) -> ModelInfo:
    return ModelInfo(
        name="m", display_name="m", created=0, deployments=deployments, strategy=strategy
    )


def key_of(n: int) -> int:
    return (n * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)


def firsts(deployments, keys=KEYS) -> dict[int, int]:
    return {n: rendezvous(deployments, key_of(n))[0].id for n in keys}


def test_the_same_key_ranks_the_deployments_the_same_in_any_listing():
    a, b, c = deployment(1), deployment(2), deployment(3)
    assert [d.id for d in rendezvous((a, b, c), 12345)] == [
        d.id for d in rendezvous((c, a, b), 12345)
    ]


def test_removing_a_deployment_moves_only_the_keys_it_was_first_for():
    a, b, c = deployment(1), deployment(2), deployment(3)
    before = firsts((a, b, c))
    after = firsts((a, c))
    moved = {n for n in KEYS if before[n] != after[n]}
    assert moved == {n for n in KEYS if before[n] == 2}


def test_a_moved_key_goes_to_its_second_in_hash_order():
    a, b, c = deployment(1), deployment(2), deployment(3)
    seconds = {n: rendezvous((a, b, c), key_of(n))[1].id for n in KEYS}
    after = firsts((a, c))
    before = firsts((a, b, c))
    assert {n: after[n] for n in KEYS if before[n] == 2} == {
        n: seconds[n] for n in KEYS if before[n] == 2
    }


def test_adding_a_deployment_moves_keys_only_to_it():
    a, b, c = deployment(1), deployment(2), deployment(3)
    before = firsts((a, b))
    after = firsts((a, b, c))
    assert {after[n] for n in KEYS if before[n] != after[n]} == {3}


def test_weights_share_the_keys():
    heavy, light = deployment(1, weight=3), deployment(2, weight=1)
    share = sum(1 for first in firsts((heavy, light)).values() if first == 1) / len(KEYS)
    assert 0.72 < share < 0.78


def test_a_weight_zero_deployment_is_first_for_no_key():
    zero, one = deployment(1, weight=0), deployment(2, weight=1)
    assert set(firsts((zero, one)).values()) == {2}


def test_an_unavailable_first_choice_gives_way_to_the_next_in_hash_order():
    deployments = (deployment(1), deployment(2), deployment(3))
    ranked = rendezvous(deployments, 777)
    down = ranked[0].id
    chosen = order(model("affinity", *deployments), 777, available=lambda d: d != down)
    assert [d.id for d in chosen] == [d.id for d in ranked[1:]]


def test_with_nothing_available_every_deployment_is_still_tried():
    deployments = (deployment(1), deployment(2))
    chosen = order(model("affinity", *deployments), 777, available=lambda d: False)
    assert [d.id for d in chosen] == [d.id for d in rendezvous(deployments, 777)]


def test_an_affinity_request_without_a_session_key_is_weighted():
    heavy, light = deployment(1, weight=1_000_000_000), deployment(2, weight=1)
    assert order(model("affinity", heavy, light), None)[0].id == 1


def test_weighted_orders_every_deployment_once():
    deployments = (deployment(1), deployment(2), deployment(3))
    assert sorted(d.id for d in order(model("weighted", *deployments), None)) == [1, 2, 3]


def test_least_busy_puts_the_busiest_last():
    board = BalanceBoard(None)
    deployments = (deployment(1, weight=1_000_000_000), deployment(2), deployment(3))
    board.started(1)
    board.started(1)
    board.started(3)
    chosen = order(model("least-busy", *deployments), None, board=board)
    assert [d.id for d in chosen] == [2, 3, 1]


def test_least_busy_adds_the_other_processes_counts():
    board = BalanceBoard(None, process_id="me")
    now = int(time.time() * 1000)
    board.absorb({b"b:2:other": f"5:{now}".encode()}, now)
    board.started(1)
    chosen = order(model("least-busy", deployment(1), deployment(2)), None, board=board)
    assert [d.id for d in chosen] == [1, 2]


def test_without_a_board_least_busy_is_weighted():
    heavy, light = deployment(1, weight=1_000_000_000), deployment(2, weight=1)
    assert order(model("least-busy", heavy, light), None)[0].id == 1


def test_a_request_slot_follows_its_attempts_and_is_released_on_failure():
    board = BalanceBoard(None)
    with pytest.raises(RuntimeError), in_flight(board) as at:
        at(deployment(1))
        at(deployment(2))
        assert (board.busy(1), board.busy(2)) == (0, 1)
        raise RuntimeError
    assert (board.busy(1), board.busy(2)) == (0, 0)


def test_the_board_ignores_its_own_entries():
    board = BalanceBoard(None, process_id="me")
    now = int(time.time() * 1000)
    board.absorb({"b:1:me": f"4:{now}"}, now)
    assert board.busy(1) == 0


def test_a_silent_processes_counts_are_ignored():
    board = BalanceBoard(None, process_id="me")
    now = int(time.time() * 1000)
    board.absorb({"b:1:gone": f"4:{now - 5_000}"}, now)
    assert board.busy(1) == 0


def test_a_long_gone_processes_entries_are_deleted():
    board = BalanceBoard(None, process_id="me")
    now = int(time.time() * 1000)
    forget = board.absorb({"b:1:gone": f"4:{now - 120_000}", "b:2:live": f"1:{now}"}, now)
    assert forget == ["b:1:gone"]


@pytest.mark.parametrize("field", ["b:x:p", "junk", "b:1:p:extra"])
def test_a_malformed_entry_is_deleted(field):
    board = BalanceBoard(None, process_id="me")
    now = int(time.time() * 1000)
    assert board.absorb({field: "nonsense"}, now) == [field]


def test_latency_measures_an_unmeasured_deployment_first():
    board = BalanceBoard(None)
    board.observe_ttft(1, 50)
    chosen = order(model("latency", deployment(1), deployment(2)), None, board=board)
    assert chosen[0].id == 2


def test_latency_probes_an_unmeasured_deployment_once_at_a_time():
    board = BalanceBoard(None)
    board.observe_ttft(1, 50)
    pair = model("latency", deployment(1), deployment(2))
    order(pair, None, board=board)
    assert order(pair, None, board=board)[0].id == 1


def test_latency_prefers_the_lower_average():
    board = BalanceBoard(None)
    board.observe_ttft(1, 300)
    board.observe_ttft(2, 40)
    chosen = order(
        model("latency", deployment(1, weight=1_000_000_000), deployment(2)), None, board=board
    )
    assert chosen[0].id == 2


def test_latency_averages_the_other_processes_measures():
    board = BalanceBoard(None, process_id="me")
    now = int(time.time() * 1000)
    board.observe_ttft(1, 100)
    board.observe_ttft(2, 120)
    board.absorb({"l:1:other": f"300.0:{now}:{now}"}, now)
    chosen = order(model("latency", deployment(1), deployment(2)), None, board=board)
    assert chosen[0].id == 2
