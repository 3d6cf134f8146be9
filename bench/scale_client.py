#!/usr/bin/env python3
"""The HTTP client of bench/scale.sh: timed requests on one keep-alive connection.

    scale_client.py URL KEY sample PATH N           p50 and p99 (ms) of N GETs
    scale_client.py URL KEY deep PATH PAGE N        p50 and p99 (ms) of N GETs of page PAGE
                                                    (reached by following next_cursor);
                                                    "-" when the list has fewer pages
    scale_client.py URL KEY verify SECONDS BODY     p50, p99 (ms) and count of POST /v1/verify

Only the standard library, so the benchmark needs nothing but python3.
"""

import http.client
import json
import sys
import time
import urllib.parse


def percentiles(seconds):
    ordered = sorted(seconds)

    def rank(p):
        r = p * len(ordered)
        return int(r) if r == int(r) else int(r) + 1

    return ordered[rank(0.50) - 1] * 1000, ordered[rank(0.99) - 1] * 1000


class Client:
    def __init__(self, url, key):
        parsed = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def request(self, method, path, body=None):
        started = time.perf_counter()
        self.conn.request(method, path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        took = time.perf_counter() - started
        if response.status >= 400:
            sys.exit(f"{method} {path}: {response.status} {data[:200]!r}")
        return took, data


def with_cursor(path, cursor):
    return f"{path}{'&' if '?' in path else '?'}cursor={cursor}"


def main():
    url, key, command, *args = sys.argv[1:]
    client = Client(url, key)
    if command == "sample":
        path, n = args[0], int(args[1])
        times = [client.request("GET", path)[0] for _ in range(n)]
        print("%.1f %.1f" % percentiles(times))
    elif command == "deep":
        path, page, n = args[0], int(args[1]), int(args[2])
        cursor = None
        for _ in range(page - 1):
            _, data = client.request("GET", with_cursor(path, cursor) if cursor else path)
            cursor = json.loads(data)["next_cursor"]
            if cursor is None:
                print("- -")
                return
        target = with_cursor(path, cursor)
        times = [client.request("GET", target)[0] for _ in range(n)]
        print("%.1f %.1f" % percentiles(times))
    elif command == "verify":
        seconds, body = float(args[0]), args[1]
        ends = time.monotonic() + seconds
        times = []
        while time.monotonic() < ends:
            times.append(client.request("POST", "/v1/verify", body)[0])
        print("%.2f %.2f %d" % (*percentiles(times), len(times)))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
