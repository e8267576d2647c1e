"""Arguments packed once (``pack``) are the bytes hiredis would send, and a script run
with them (``evalsha_packed``) answers as with ``evalsha``."""

import asyncio

import hiredis
from django.conf import settings

from apps.core.fastredis import FastRedis, pack

VALUES = ("key", b"\x00\xffraw", "é", 0, -1, 10**18, 2.5)
ECHO = "return {#KEYS, KEYS[1], ARGV[1], ARGV[2]}"


def test_packed_arguments_are_what_hiredis_sends():
    command = hiredis.pack_command(VALUES)
    assert pack(VALUES).data == command.split(b"\r\n", 1)[1]


def test_packed_arguments_count_the_values():
    assert pack(VALUES).count == len(VALUES)


def test_packed_parts_add_up_to_the_whole():
    assert pack(VALUES[:3]) + pack(VALUES[3:]) == pack(VALUES)


def _run(keys, args, packed: bool):
    async def main():
        fast = FastRedis(settings.REDIS_URL)
        sha = fast.register(ECHO)
        try:
            if packed:
                return await fast.evalsha_packed(
                    sha, [pack(keys)], tuple(args[:1]), [pack(args[1:])]
                )
            return await fast.evalsha(sha, keys, args)
        finally:
            await fast.close()

    return asyncio.run(main())


def test_a_script_run_with_packed_arguments_answers_as_unpacked(redis_url):
    keys, args = ["tg:test:a", "tg:test:b"], [42, "x"]
    assert _run(keys, args, packed=True) == _run(keys, args, packed=False)
