"""The Celery side of the baseline: one app, one no-op task, Redis as broker and result backend.

Settings come from the environment so run.py can point the worker and its clients at the
Redis it started:

    CELERY_BENCH_REDIS_PORT   Redis port on 127.0.0.1 (default 6390)
    CELERY_BENCH_PREFETCH     worker_prefetch_multiplier (default 4, Celery's own default)

Broker on database 0, results on database 1, so the number of keys in database 1 is the number
of tasks that have finished (run.py reads it with DBSIZE, which costs O(1)).
"""

import os
import warnings

from celery import Celery
from celery.exceptions import SecurityWarning

# The bench machine runs as root; the warning about it is noise here (JSON only, no pickle).
warnings.filterwarnings("ignore", category=SecurityWarning)

PORT = int(os.environ.get("CELERY_BENCH_REDIS_PORT", "6390"))
PREFETCH = int(os.environ.get("CELERY_BENCH_PREFETCH", "4"))
BROKER_URL = f"redis://127.0.0.1:{PORT}/0"
RESULT_URL = f"redis://127.0.0.1:{PORT}/1"
RESULT_DB = 1

app = Celery("conveyor_bench", broker=BROKER_URL, backend=RESULT_URL)
app.conf.update(
    # Durability: a task is acknowledged (removed from Redis) only after it has run, and a task
    # whose worker process dies mid-run is given back to the queue instead of being dropped.
    # With the Redis transport, a delivered but unacknowledged message sits in the
    # `unacked` hash and is restored to the queue once the visibility timeout passes, so it
    # also survives a SIGKILL of the whole worker.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # Each pool process holds at most PREFETCH reserved messages (default 4 = Celery's own).
    worker_prefetch_multiplier=PREFETCH,
    # Results are stored (like a job's result and status are), plain JSON.
    task_ignore_result=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    # Nothing the bench does not need: no task events, no remote-control mailbox.
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
)


@app.task(name="noop")
def noop(*args, **kwargs):
    return {"ok": True}
