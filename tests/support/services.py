"""The production services of dev and CI machines (PostgreSQL, Redis): a test that needs them says
so when they are absent."""


import pytest
import redis
from sqlalchemy import create_engine

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


REDIS_URL = "redis://127.0.0.1:6379/0"


def require_services() -> None:
    try:
        create_engine(PG_URL).connect().close()
        redis.Redis.from_url(REDIS_URL).ping()
    except Exception as exc:
        pytest.fail(f"PostgreSQL (127.0.0.1:5432/test) and Redis (127.0.0.1:6379) are "
                    f"expected on this machine: {exc}")
