"""How long a tenant-bound caller's 404 takes for another tenant's key or user, beside one
for a key or user that does not exist: the gap is what timing tells of another tenant's
records. Starts BINARY on a new store at 127.0.0.1:PORT, makes the records, then times
interleaved GETs over one keep-alive connection (ROUNDS, default 600) and prints medians.

    python3 bench/tenant_404.py target/release/latchkey 46990
"""
import http.client, json, os, statistics, subprocess, sys, tempfile, time, uuid
binary, port = sys.argv[1], int(sys.argv[2])
d = tempfile.mkdtemp()
db = os.path.join(d, "db"); keyfile = os.path.join(d, "admin")
subprocess.run([binary, "--db", db, "init", "--admin-key-file", keyfile], check=True, capture_output=True)
admin = open(keyfile).read().strip()
p = subprocess.Popen([binary, "--db", db, "serve", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", "/healthz"); c.getresponse().read(); break
        except OSError: time.sleep(0.1)
    c = http.client.HTTPConnection("127.0.0.1", port)
    def call(method, path, key, body=None):
        h = {"Authorization": f"Bearer {key}"}
        if body is not None: h["Content-Type"] = "application/json"
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        r = c.getresponse(); data = r.read(); return r.status, data
    s, u = call("POST", "/v1/users", admin, {"name": "acme-ops", "permissions": ["latchkey:keys:read", "latchkey:users:read"], "tenant_id": "acme"}); assert s == 201, u
    s, u = call("POST", "/v1/users", admin, {"name": "other-bot", "permissions": ["orders:read"], "tenant_id": "other"}); assert s == 201, u
    s, k = call("POST", "/v1/keys", admin, {"name": "t", "user_id": "acme-ops"}); assert s == 201, k
    tenant = json.loads(k)["secret"]
    s, k = call("POST", "/v1/keys", admin, {"name": "o", "user_id": "other-bot", "meta": {"a": 1}}); assert s == 201, k
    other_key = json.loads(k)["id"]
    other_user = json.loads(u)["id"]
    s, k = call("POST", "/v1/keys", admin, {"name": "gone", "user_id": "other-bot"}); assert s == 201, k
    gone = json.loads(k)["id"]
    assert call("POST", f"/v1/keys/{gone}/revoke", admin, {})[0] == 200
    assert call("DELETE", f"/v1/keys/{gone}", admin)[0] in (200, 204)
    paths = {"key other tenant": f"/v1/keys/{other_key}", "key missing": f"/v1/keys/{uuid.uuid4()}", "key deleted": f"/v1/keys/{gone}",
             "user other tenant": f"/v1/users/{other_user}", "user missing": f"/v1/users/{uuid.uuid4()}"}
    times = {n: [] for n in paths}
    for _ in range(int(os.environ.get("ROUNDS", "600"))):
        for n, path in paths.items():
            t = time.perf_counter_ns(); s, _ = call("GET", path, tenant); times[n].append((time.perf_counter_ns() - t) / 1000)
            assert s == 404, (n, s)
    for n, ts in times.items():
        print(f"{n:20} median {statistics.median(ts):8.1f} µs  p10 {sorted(ts)[len(ts)//10]:8.1f}")
finally:
    p.terminate(); p.wait()
