"""What the stack may run at once in Lambda, against what the account allows (`make deploy`).

Each worker function's SQS event source runs up to its `MaximumConcurrency` invocations at once,
and every other function needs at least one. An account whose concurrency quota is below that
(a new account's can be 10) still deploys and runs, but Lambda throttles, and each throttled
receive counts toward the queue's maxReceiveCount. This says so before the deploy, with the
numbers and what to ask for; it never stops the deploy.

Usage: python concurrency.py REGION TEMPLATE (the SAM venv's python, which has boto3).
"""

import re
import sys


def needed(template: str) -> tuple[int, int]:
    """(what the workers' event sources may run at once, how many other functions there are)."""
    workers = sum(int(n) for n in re.findall(r"MaximumConcurrency: (\d+)", template))
    functions = len(re.findall(r"Type: AWS::Serverless::Function\b", template))
    worker_functions = len(re.findall(r"^  \w+WorkerFunction:\s*$", template, re.M))
    return workers, functions - worker_functions


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    region, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        workers, others = needed(f.read())
    import boto3

    try:
        limit = boto3.client("lambda", region_name=region).get_account_settings()["AccountLimit"]
    except Exception as e:  # (no credentials yet, or no access: sam deploy says more)
        print(f"Lambda's concurrency in {region} not read ({e}); see the README's deploy section.")
        return 0
    allowed = limit.get("ConcurrentExecutions", 0)
    unreserved = limit.get("UnreservedConcurrentExecutions", allowed)
    want = workers + others
    if unreserved >= want:
        print(f"Lambda's concurrency in {region}: {unreserved} unreserved; the stack may take {want}.")
        return 0
    print(
        f"Note: this account runs at most {allowed} Lambda invocations at once in {region} "
        f"({unreserved} unreserved), and this stack may take {want}: {workers} for the workers' "
        f"queues and at least one for each of its {others} other functions. It deploys and runs, "
        f"but Lambda throttles the rest: jobs wait longer, and a throttled receive counts toward "
        f"a queue's maxReceiveCount (a job that never ran is sent back, not lost). Ask for "
        f"{want} or more in Service Quotas (AWS Lambda, \"Concurrent executions\") before real "
        f"load.",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
