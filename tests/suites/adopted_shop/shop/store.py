import psycopg
import redis

from shop import settings


def connect():
    return psycopg.connect(**settings.DATABASE, autocommit=True)


def cache():
    return redis.Redis.from_url(settings.CACHE_URL)
