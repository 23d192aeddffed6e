#!/usr/bin/env python3
"""Celery + Redis baseline: the same no-op jobs Conveyor's bench runs, measured the same way.

    run.py --jobs N --clients C [--port 6390] [--pool prefork] [--concurrency CORES]

Starts its own redis-server on 127.0.0.1:<port> (AOF on, fsync every second, no snapshots) in a
temporary directory and a Celery worker as child processes, waits until the worker has run one
warm-up task, then submits N no-op tasks from C client threads (`noop.delay()` each) and
waits until all N have finished. Prints one JSON line on stdout; everything else goes to
stderr. Run it with the venv that setup.sh makes.
"""

import argparse
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TIME_LIMIT_S = float(os.environ.get("CELERY_BENCH_TIME_LIMIT_S", "600"))  # the whole run, start to stop


def log(msg):
    print(f"celery-bench: {msg}", file=sys.stderr, flush=True)


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--port", type=int, default=int(os.environ.get("CELERY_BENCH_REDIS_PORT", "6390")))
    p.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    p.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    if a.jobs < 1 or a.clients < 1 or a.concurrency < 1:
        p.error("--jobs, --clients and --concurrency must be at least 1")
    return a


def percentile(sorted_values, p):
    """Same rule as Conveyor's bench: the value at round((n - 1) * p)."""
    if not sorted_values:
        return 0.0
    return sorted_values[round((len(sorted_values) - 1) * p)]


# --- processes -------------------------------------------------------------------------------


class Children:
    """The processes this run started, each the leader of its own process group."""

    def __init__(self):
        self.procs = {}  # name -> Popen
        self.lock = threading.Lock()
        self.done = False

    def start(self, name, argv, **kw):
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        with self.lock:
            self.procs[name] = proc
        return proc

    def stop(self, name, grace_s):
        """SIGTERM the leader, wait up to grace_s, then SIGKILL the whole group."""
        proc = self.procs.get(name)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=grace_s)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers (pool children) too
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log(f"{name} (pid {proc.pid}) did not exit after SIGKILL")

    def stop_all(self, grace_s=10):
        with self.lock:
            if self.done:
                return
            self.done = True
        # The worker first (it talks to Redis while it shuts down), then Redis.
        self.stop("worker", grace_s)
        self.stop("redis", grace_s)


def descendants(root):
    """root and every process below it, from the ppid field of /proc/<pid>/stat."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields start after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
    found, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def vm_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def port_in_use(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(what, predicate, timeout_s, interval_s=0.005, check=None):
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if check:
            check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(interval_s)


# --- the run ---------------------------------------------------------------------------------


def main():
    args = parse_args()
    os.environ["CELERY_BENCH_REDIS_PORT"] = str(args.port)
    sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True  # no __pycache__ left in the source tree

    import celery
    import redis

    import tasks

    if shutil.which("redis-server") is None:
        raise SystemExit("celery-bench: redis-server not found: run bench/celery/setup.sh first")
    if port_in_use(args.port):
        raise SystemExit(f"celery-bench: 127.0.0.1:{args.port} is already in use: pick another --port")

    children = Children()
    tmp = tempfile.mkdtemp(prefix="celery-bench-")
    started = time.monotonic()

    def abort_on_time_limit():
        log(f"ERROR: the run did not finish within {TIME_LIMIT_S:.0f} s; stopping everything")
        children.stop_all(grace_s=2)
        shutil.rmtree(tmp, ignore_errors=True)
        os._exit(3)

    watchdog = threading.Timer(TIME_LIMIT_S, abort_on_time_limit)
    watchdog.daemon = True
    watchdog.start()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)

    try:
        # 1. Redis: loopback only, durable on every accepted write (AOF, fsync every second).
        children.start(
            "redis",
            [
                "redis-server",
                "--port", str(args.port),
                "--bind", "127.0.0.1",
                "--protected-mode", "yes",
                "--dir", tmp,
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
                "--logfile", os.path.join(tmp, "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
        )

        def redis_alive():
            rc = children.procs["redis"].poll()
            if rc is not None:
                raise RuntimeError(f"redis-server exited with {rc}; see its log above")

        results = redis.Redis(host="127.0.0.1", port=args.port, db=tasks.RESULT_DB, socket_timeout=10)

        def redis_up():
            try:
                return results.ping()
            except redis.exceptions.ConnectionError:
                return False

        wait_until("redis-server start", redis_up, 10, 0.02, redis_alive)
        redis_version = results.info("server")["redis_version"]
        log(f"redis {redis_version} on 127.0.0.1:{args.port} (appendonly yes, appendfsync everysec, no snapshots), data in {tmp}")

        # 2. The worker.
        worker_env = dict(os.environ, CELERY_BENCH_REDIS_PORT=str(args.port), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        worker = children.start(
            "worker",
            [
                sys.executable, "-m", "celery", "--quiet", "-A", "tasks", "worker",
                "--pool", args.pool,
                "--concurrency", str(args.concurrency),
                "--loglevel", "WARNING",
                "--hostname", f"bench-{os.getpid()}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=HERE,
            env=worker_env,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr,
            stderr=sys.stderr,
        )

        def both_alive():
            redis_alive()
            rc = worker.poll()
            if rc is not None:
                raise RuntimeError(f"the Celery worker exited with {rc}; see its log above")

        # 3. Ready = the worker has run a warm-up task end to end (this also opens the client's
        #    broker connections before the clock starts, as Conveyor's bench does with one job).
        app = tasks.app
        app.conf.broker_pool_limit = max(10, args.clients)
        t = time.monotonic()
        tasks.noop.delay()
        wait_until("the worker's warm-up task", lambda: results.dbsize() >= 1, 120, 0.01, both_alive)
        before = results.dbsize()
        log(f"load average (1 min) before the run: {load_average()}")
        log(f"worker ready ({args.pool}, concurrency {args.concurrency}, prefetch multiplier "
            f"{tasks.PREFETCH}); warm-up task done in {time.monotonic() - t:.2f} s")

        # 4. N no-op tasks from C client threads; the clock runs until the last one has finished.
        counter = itertools.count()
        latencies = [[] for _ in range(args.clients)]
        errors = []

        def client(mine):
            try:
                while next(counter) < args.jobs:
                    t0 = time.perf_counter()
                    tasks.noop.delay()
                    mine.append(time.perf_counter() - t0)
            except Exception as e:  # reported after the threads are joined
                errors.append(e)

        log(f"submitting {args.jobs} tasks from {args.clients} clients")
        threads = [threading.Thread(target=client, args=(latencies[i],), daemon=True) for i in range(args.clients)]
        t_start = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            while th.is_alive():
                th.join(timeout=1)
                both_alive()
        t_submitted = time.perf_counter()
        if errors:
            raise RuntimeError(f"{len(errors)} client(s) failed; first: {errors[0]!r}")

        target = before + args.jobs
        remaining_s = max(1.0, TIME_LIMIT_S - (time.monotonic() - started))
        wait_until(f"{args.jobs} tasks finished", lambda: results.dbsize() >= target, remaining_s, 0.005, both_alive)
        t_done = time.perf_counter()

        # 5. Peak RSS: VmHWM of redis-server and of the worker with all its pool processes.
        pids = {children.procs["redis"].pid} | descendants(worker.pid)
        peak_kib = sum(vm_kib(pid, "VmHWM:") for pid in pids)

        lat = sorted(x for per in latencies for x in per)
        elapsed = t_done - t_start
        out = {
            "system": "celery+redis",
            "jobs": args.jobs,
            "clients": args.clients,
            "submit_p50_ms": round(percentile(lat, 0.50) * 1000, 3),
            "submit_p99_ms": round(percentile(lat, 0.99) * 1000, 3),
            "throughput_jobs_per_s": round(args.jobs / elapsed, 1),
            "peak_rss_mb": round(peak_kib / 1024, 1),
            "pool": args.pool,
            "celery_version": celery.__version__,
            "redis_version": redis_version,
            "concurrency": args.concurrency,
            "submit_rate_jobs_per_s": round(args.jobs / (t_submitted - t_start), 1),
            "processes_measured": len(pids),
        }
        log(f"{args.jobs} tasks: submitted in {t_submitted - t_start:.2f} s, all finished after {elapsed:.2f} s; "
            f"load average (1 min) now {load_average()}")
    finally:
        watchdog.cancel()
        children.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as e:
        log(f"interrupted ({str(e) or 'Ctrl-C'}); stopped everything")
        sys.exit(130)
    except RuntimeError as e:
        log(f"ERROR: {e}")
        sys.exit(1)
