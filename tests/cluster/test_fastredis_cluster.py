"""The hot-path client on a real Redis Cluster: routing by slot, ASK while a slot
migrates, MOVED after, NOSCRIPT on a node that never saw the script."""

import asyncio

from redis.crc import key_slot

from apps.core.fastredis import ClusterFastRedis

INCR = "return redis.call('INCR', KEYS[1])"


def client_of(cluster) -> ClusterFastRedis:
    return ClusterFastRedis([("127.0.0.1", p) for p in cluster.ports])


def test_each_script_runs_on_the_node_of_its_key(redis_cluster):
    redis_cluster.flush()
    keys = [f"tg:route:{{s{n}}}" for n in range(16)]

    async def run():
        client = client_of(redis_cluster)
        sha = client.register(INCR)
        replies = [await client.evalsha(sha, [key], []) for key in keys]
        await client.close()
        return replies

    assert asyncio.run(run()) == [1] * 16
    for key in keys:
        owner = redis_cluster.owner(key_slot(key.encode()))
        assert redis_cluster.node(owner).get(key) == b"1"


def test_ask_during_a_migration_and_moved_after_it(redis_cluster):
    redis_cluster.flush()
    moved_key, staying_key = "tg:ask:{s7}:moved", "tg:ask:{s7}:staying"
    slot = key_slot(moved_key.encode())
    source = redis_cluster.owner(slot)
    target = next(p for p in redis_cluster.ports if p != source)
    source_node, target_node = redis_cluster.node(source), redis_cluster.node(target)
    source_node.set(moved_key, 10)
    source_node.set(staying_key, 20)

    async def run():
        client = client_of(redis_cluster)
        sha = client.register(INCR)
        await client.evalsha(sha, [staying_key], [])  # the slot map loaded: source serves
        # Half-way through a migration: one key already at the target.
        target_node.execute_command(
            "CLUSTER", "SETSLOT", slot, "IMPORTING", redis_cluster.node_id(source)
        )
        source_node.execute_command(
            "CLUSTER", "SETSLOT", slot, "MIGRATING", redis_cluster.node_id(target)
        )
        source_node.execute_command("MIGRATE", "127.0.0.1", target, moved_key, 0, 5000)
        asked = await client.evalsha(sha, [moved_key], [])  # ASK → the target
        stayed = await client.evalsha(sha, [staying_key], [])  # still at the source
        redis_cluster.migrate_slot(slot, target)
        after = await client.evalsha(sha, [staying_key], [])  # MOVED → the target
        await client.close()
        return asked, stayed, after

    asked, stayed, after = asyncio.run(run())
    assert asked == 11
    assert stayed == 22
    assert after == 23
    assert target_node.get(staying_key) == b"23"


def test_a_node_that_lost_the_script_loads_it_again(redis_cluster):
    redis_cluster.flush()
    key = "tg:noscript:{s1}"

    async def run():
        client = client_of(redis_cluster)
        sha = client.register(INCR)
        first = await client.evalsha(sha, [key], [])
        owner = redis_cluster.owner(key_slot(key.encode()))
        redis_cluster.node(owner).script_flush()
        second = await client.evalsha(sha, [key], [])
        await client.close()
        return first, second

    assert asyncio.run(run()) == (1, 2)
