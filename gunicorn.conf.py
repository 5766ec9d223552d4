"""Gunicorn settings for production. Gunicorn reads this file from its working directory by itself; flags
given on its command line win (bench/run passes its own worker counts).

gthread workers: one process per core or two, each with a few threads. The API's requests mostly wait on
Redis or PostgreSQL round trips, which threads overlap; processes give the cores to Python, whose GIL lets
one thread of a process run at a time. Sync workers were measured slower (bench/README.md, "Figures behind
the code"): they close every connection, so each request also pays a TCP handshake. Each thread holds
its own PostgreSQL connection (CONN_MAX_AGE): workers x threads per web machine must fit the database's
max_connections along with the Celery workers.
"""

import multiprocessing
import os

wsgi_app = "sociomile.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count()))
threads = int(os.environ.get("WEB_THREADS", 4))
# Keep-alive connections from a load balancer or a client are served without a new handshake each time.
keepalive = int(os.environ.get("WEB_KEEPALIVE_SECONDS", 5))
backlog = 2048
# SIGTERM: running requests get this long to finish.
graceful_timeout = 30
timeout = 30
# No access log from gunicorn by default (the proxy in front has one): a line per request costs CPU.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
