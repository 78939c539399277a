"""The Lua scripts are package data: every one ships in the wheel, compiles in Redis and is read once."""

from __future__ import annotations

import tomllib

import redis

from libs import lua
from libs.ops.processes import ROOT
from libs.settings import Settings


def test_every_script_compiles_in_redis(settings: Settings) -> None:
    # Given every script zapq ships
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for name in lua.names():
            source = lua.source(name)
            # Then Redis compiles it (an expression fragment as a returned value)
            script = f"return {source}" if name == "redis_clock_ms" else source
            assert len(client.script_load(script)) == 40, name
        # And the Redis-clock fragment is Redis's clock in milliseconds
        seconds, micros = client.time()
        now_ms = client.eval(f"return {lua.source('redis_clock_ms')}", 0)
        assert abs(now_ms - (seconds * 1000 + micros // 1000)) < 5_000
    finally:
        client.close()


def test_scripts_are_read_once() -> None:
    # Given a script read before
    first = lua.source("group_commit")
    # Then reading it again returns the very same text, not a new read
    assert lua.source("group_commit") is first


def test_every_script_is_package_data_of_the_wheel() -> None:
    # Given the scripts in the source tree and the package data of the build
    files = sorted(path.stem for path in (ROOT / "libs" / "lua").glob("*.lua"))
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = config["tool"]["setuptools"]["package-data"]["libs"]
    # Then the loader lists each one and the wheel carries them (the image installs the wheel built from libs/)
    assert lua.names() == files and files
    assert "lua/*.lua" in package_data
    assert "COPY libs ./libs" in (ROOT / "deploy" / "Dockerfile").read_text()
