use latchkey_core::{ApiKey, Env, Prefix};
use serde_json::{Value, json};

use crate::backend;
use crate::harness::{Answer, Fixture};

/// A fixture with a service user, one active key, one revoked key and a key that may only
/// read keys.
struct Setup {
    f: Fixture,
    active: String,
    revoked: String,
    revoked_secret: String,
    reader_secret: String,
}

fn setup() -> Setup {
    let f = Fixture::new();
    f.user("svc", "orders:read");
    f.user("reader", "latchkey:keys:read");
    let (active, _) = f.key("svc", "active", &[]);
    let (revoked, revoked_secret) = f.key("reader", "revoked", &[]);
    let (_, reader_secret) = f.key("reader", "reader", &[]);
    let revoked = revoked["id"].as_str().unwrap().to_owned();
    f.json(&["keys", "revoke", &revoked]);
    Setup {
        active: active["id"].as_str().unwrap().to_owned(),
        revoked,
        revoked_secret,
        reader_secret,
        f,
    }
}

/// Asserts a problem answer and, when given, the field it names.
#[track_caller]
fn check(answer: Answer, status: u16, code: &str, field: Option<&str>) {
    let body = answer.problem(status, code);
    match field {
        Some(field) => assert_eq!(body["field"], field, "{answer:#?}"),
        None => assert!(body.get("field").is_none_or(Value::is_null), "{answer:#?}"),
    }
}

/// A request with the admin key and the problem it must get: method, path, JSON body (`""`
/// for none), status, code and the field the problem names.
type Case<'a> = (&'a str, &'a str, &'a str, u16, &'a str, Option<&'a str>);

/// Sends each case's request and [`check`]s its answer; a failure's output ends with its case.
#[track_caller]
fn check_all(f: &Fixture, cases: &[Case]) {
    for &(method, path, body, status, code, field) in cases {
        eprintln!("case: {method} {path} {body}");
        let json = (!body.is_empty()).then(|| serde_json::from_str(body).unwrap());
        check(f.http(method, path, json), status, code, field);
    }
}

#[test]
fn authentication_errors() {
    let s = setup();
    let d = &s.f.daemon;

    let none = d.http("GET", "/v1/keys", None, None);
    assert_eq!(
        none.headers["www-authenticate"],
        "Bearer realm=\"latchkey\""
    );
    check(none, 401, "missing_key", None);

    for bad in ["nope", "lk_live_short"] {
        let answer = d.http("GET", "/v1/keys", Some(bad), None);
        assert_eq!(
            answer.headers["www-authenticate"],
            "Bearer realm=\"latchkey\", error=\"invalid_token\""
        );
        check(answer, 401, "invalid_key", None);
    }
    // A well-formed key with an unknown id answers exactly as a wrong secret does.
    let unknown = ApiKey::generate(&Prefix::default(), Env::Live);
    let unknown = d.http("GET", "/v1/keys", Some(unknown.expose()), None);
    // The admin key's id with another secret, and a valid checksum.
    let admin = ApiKey::parse(&s.f.admin).unwrap();
    let other = ApiKey::generate(&Prefix::default(), Env::Live);
    let body = format!("{}_{}", admin.display_prefix(), other.secret());
    let sum = latchkey_core::key::checksum(body.as_bytes());
    let forged = format!("{body}{}", std::str::from_utf8(&sum).unwrap());
    assert!(ApiKey::parse(&forged).is_ok());
    let wrong = d.http("GET", "/v1/keys", Some(&forged), None);
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(unknown.body["code"], wrong.body["code"]);
    check(unknown, 401, "invalid_key", None);

    // The holder of a revoked key learns that it is revoked.
    check(
        d.http("GET", "/v1/keys", Some(&s.revoked_secret), None),
        401,
        "key_revoked",
        None,
    );

    // Authenticated without the permission.
    let forbidden = d.http(
        "POST",
        "/v1/keys",
        Some(&s.reader_secret),
        Some(json!({"name": "x", "user_id": "svc"})),
    );
    assert_eq!(
        forbidden.headers["www-authenticate"],
        "Bearer error=\"insufficient_scope\", scope=\"latchkey:keys:write\""
    );
    check(forbidden, 403, "insufficient_permission", None);
    for (method, path) in [
        ("GET", "/v1/users"),
        ("GET", "/v1/groups"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/audit/verify"),
        ("POST", "/v1/verify"),
        ("DELETE", "/v1/keys/nope"),
    ] {
        let body = (method == "POST").then(|| json!({"key": "x"}));
        check(
            d.http(method, path, Some(&s.reader_secret), body),
            403,
            "insufficient_permission",
            None,
        );
    }
    // What it may do, it can.
    assert_eq!(
        d.http("GET", "/v1/keys", Some(&s.reader_secret), None)
            .status,
        200
    );
}

#[test]
fn group_errors() {
    let s = setup();
    let f = &s.f;
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("POST", "/v1/groups", r#"{"name": "admin"}"#, 409, "name_taken", None),
        ("POST", "/v1/groups", r#"{"name": "two words"}"#, 400, "invalid_field", Some("name")),
        ("POST", "/v1/groups", r#"{"name": "g", "permissions": ["Orders Read"]}"#, 400, "invalid_field", Some("permissions")),
        ("POST", "/v1/groups", r#"{"name": "g", "colour": "red"}"#, 400, "invalid_field", Some("colour")),
        ("POST", "/v1/groups", "{}", 400, "invalid_field", Some("name")),
        ("GET", "/v1/groups/nope", "", 404, "not_found", None),
        ("PATCH", "/v1/groups/nope", r#"{"name": "x"}"#, 404, "not_found", None),
        ("PATCH", "/v1/groups/admin", r#"{"permissions": "*"}"#, 400, "invalid_field", Some("permissions")),
        ("DELETE", "/v1/groups/nope", "", 404, "not_found", None),
        ("GET", "/v1/groups?page=2", "", 400, "invalid_field", Some("page")),
    ];
    check_all(f, cases);
    let json = Some("application/json");
    let raw = |media_type, body| {
        f.daemon
            .http_raw("POST", "/v1/groups", &f.admin, media_type, body)
    };
    check(raw(json, "{\"name\":"), 400, "invalid_json", None);
    check(
        raw(Some("text/plain"), "{}"),
        415,
        "unsupported_media_type",
        None,
    );
}

#[test]
fn user_errors() {
    let s = setup();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("POST", "/v1/users", r#"{"name": "admin"}"#, 409, "name_taken", None),
        ("POST", "/v1/users", r#"{"name": "u", "groups": ["nope"]}"#, 404, "not_found", Some("groups")),
        ("POST", "/v1/users", r#"{"name": "u", "enabled": "yes"}"#, 400, "invalid_field", Some("enabled")),
        ("POST", "/v1/users", r#"{"name": "u", "permissions": ["a::b"]}"#, 400, "invalid_field", Some("permissions")),
        ("GET", "/v1/users/nope", "", 404, "not_found", None),
        ("PATCH", "/v1/users/nope", r#"{"enabled": false}"#, 404, "not_found", None),
        ("PATCH", "/v1/users/svc", r#"{"add_groups": ["nope"]}"#, 404, "not_found", Some("add_groups")),
        ("PATCH", "/v1/users/svc", r#"{"name": "admin"}"#, 409, "name_taken", None),
        ("DELETE", "/v1/users/nope", "", 404, "not_found", None),
    ];
    check_all(&s.f, cases);
}

/// A key's full text, or any text longer than a name, given where a user or group goes
/// (pasted into the wrong field): the 404 does not carry it back, through the API or the
/// CLI, as for a key reference.
#[test]
fn a_key_given_as_a_user_or_group_is_not_carried_back() {
    let s = setup();
    let f = &s.f;
    let key = &s.reader_secret;
    // The same key mistyped: its checksum does not match, it has a key's shape all the same.
    let last = if key.ends_with('A') { "B" } else { "A" };
    let mistyped = format!("{}{last}", &key[..key.len() - 1]);
    let long = "a".repeat(65);
    for reference in [key.as_str(), &mistyped, &long] {
        let shown = if reference == long {
            "(65 bytes, longer than any name)"
        } else {
            "(a key's full text, not shown)"
        };
        let add_groups = Some(json!({ "add_groups": [reference] }));
        for (method, path, body) in [
            ("GET", format!("/v1/users/{reference}"), None),
            ("DELETE", format!("/v1/users/{reference}"), None),
            ("POST", format!("/v1/users/{reference}/revoke-keys"), None),
            ("GET", format!("/v1/groups/{reference}"), None),
            ("GET", format!("/v1/keys?user_id={reference}"), None),
            (
                "POST",
                "/v1/keys".into(),
                Some(json!({ "name": "k", "user_id": reference })),
            ),
            ("PATCH", "/v1/users/svc".into(), add_groups),
        ] {
            let answer = f.http(method, &path, body);
            answer.problem(404, "not_found");
            assert!(
                !answer.text.contains(reference),
                "{method} {path}: {answer:#?}"
            );
            assert!(answer.text.contains(shown), "{method} {path}: {answer:#?}");
        }
        // The CLI refuses it before any request: aimed at a port where no daemon listens,
        // it says so, not that it could not connect.
        let groups = format!("svc,{reference}");
        for args in [
            ["users", "show", reference].as_slice(),
            &["users", "delete", reference],
            &["users", "update", "svc", "--add-groups", &groups],
            &["groups", "show", reference],
            &["keys", "list", "--user", reference],
            &["keys", "add", "--name", "k", "--user", reference],
            &["audit", "list", "--user", reference],
        ] {
            let run = f.cli(&[args, &["--url", "http://127.0.0.1:9"]].concat());
            assert_eq!(run.code, 2, "{args:?}: {run:#?}");
            assert!(run.stderr.contains("it was not sent"), "{args:?}: {run:#?}");
            assert!(!run.stderr.contains(reference), "{args:?}: {run:#?}");
        }
    }
    // A name is named.
    let answer = f.http("GET", "/v1/groups/nope", None);
    assert_eq!(answer.body["detail"], "group \"nope\" not found");
    // Where a key goes, a key's full text reads as one too, not as a length.
    let answer = f.http("GET", &format!("/v1/keys/{mistyped}"), None);
    assert_eq!(
        answer.problem(404, "not_found")["detail"],
        "key \"(a key's full text, not shown)\" not found"
    );
}

#[test]
fn key_errors() {
    let s = setup();
    let f = &s.f;
    let active = format!("/v1/keys/{}", s.active);
    let revoked = format!("/v1/keys/{}", s.revoked);
    let (active_rotate, revoked_rotate) = (format!("{active}/rotate"), format!("{revoked}/rotate"));
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("POST", "/v1/keys", r#"{"name": "k", "user_id": "nobody"}"#, 404, "not_found", Some("user_id")),
        ("POST", "/v1/keys", r#"{"name": "k", "user_id": "svc", "expires_at": "tomorrow"}"#, 400, "invalid_field", Some("expires_at")),
        ("POST", "/v1/keys", r#"{"name": "k", "user_id": "svc", "expires_at": "2000-01-01T00:00:00Z"}"#, 400, "invalid_field", Some("expires_at")),
        ("POST", "/v1/keys", r#"{"name": "k", "user_id": "svc", "env": "prod"}"#, 400, "invalid_field", Some("env")),
        ("POST", "/v1/keys", r#"{"name": "k", "user_id": "svc", "scopes": ["NOPE"]}"#, 400, "invalid_field", Some("scopes")),
        ("POST", "/v1/keys", r#"{"name": "", "user_id": "svc"}"#, 400, "invalid_field", Some("name")),
        ("POST", "/v1/keys", r#"{"user_id": "svc"}"#, 400, "invalid_field", Some("name")),

        ("GET", "/v1/keys?status=bogus", "", 400, "invalid_field", Some("status")),
        ("GET", "/v1/keys?sort=size", "", 400, "invalid_field", Some("sort")),
        ("GET", "/v1/keys?limit=0", "", 400, "invalid_field", Some("limit")),
        ("GET", "/v1/keys?cursor=garbage", "", 400, "invalid_field", Some("cursor")),
        ("GET", "/v1/keys?user_id=nobody", "", 404, "not_found", Some("user_id")),

        ("GET", "/v1/keys/nope", "", 404, "not_found", None),
        ("GET", "/v1/keys/01900000-0000-7000-8000-000000000000", "", 404, "not_found", None),
        ("PATCH", &active, r#"{"enabled": "no"}"#, 400, "invalid_field", Some("enabled")),
        ("PATCH", &revoked, r#"{"enabled": true}"#, 409, "key_revoked", None),
        ("PATCH", "/v1/keys/nope", r#"{"name": "x"}"#, 404, "not_found", None),
        ("POST", "/v1/keys/nope/revoke", "", 404, "not_found", None),

        ("POST", &active_rotate, r#"{"grace_seconds": -1}"#, 400, "invalid_field", Some("grace_seconds")),
        ("POST", &active_rotate, r#"{"grace_seconds": 999999999}"#, 400, "invalid_field", Some("grace_seconds")),
        ("POST", &active_rotate, "{}", 400, "invalid_field", Some("grace_seconds")),
        ("POST", &revoked_rotate, r#"{"grace_seconds": 0}"#, 409, "key_revoked", None),
        ("POST", "/v1/keys/nope/rotate", r#"{"grace_seconds": 0}"#, 404, "not_found", None),

        ("DELETE", &active, "", 409, "key_not_revoked", None),
        ("DELETE", "/v1/keys/nope", "", 404, "not_found", None),
    ];
    check_all(f, cases);
    // None of it changed anything.
    assert_eq!(f.http("GET", &active, None).body["status"], "active");
    // A short reference is named in the 404; a longer one, maybe another system's full
    // key given by mistake, is not.
    let named = f.http("GET", "/v1/keys/nope", None);
    assert!(
        named.problem(404, "not_found")["detail"]
            .as_str()
            .unwrap()
            .contains("\"nope\"")
    );
    let secret = "51H8xQ2eZvKYlo2C9aXbWq7Tz0pLmN3sV";
    let theirs = format!("/v1/keys/sk_live_{secret}");
    let patch = Some(json!({"name": "x"}));
    for (method, path, body) in [
        ("GET", theirs.clone(), None),
        ("PATCH", theirs.clone(), patch),
        ("POST", format!("{theirs}/revoke"), None),
        (
            "POST",
            format!("{theirs}/rotate"),
            Some(json!({"grace_seconds": 0})),
        ),
        ("DELETE", theirs.clone(), None),
    ] {
        let answer = f.http(method, &path, body);
        answer.problem(404, "not_found");
        assert!(
            !answer.text.contains(secret),
            "{method} {path}: {answer:#?}"
        );
        assert!(
            answer.text.contains("longer than any display prefix"),
            "{answer:#?}"
        );
    }
}

#[test]
fn verify_and_audit_errors() {
    let s = setup();
    let f = &s.f;
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("POST", "/v1/verify", "{}", 400, "invalid_field", Some("key")),
        ("POST", "/v1/verify", r#"{"key": "x", "permissions": ["Bad Perm"]}"#, 400, "invalid_field", Some("permissions")),
    ];
    check_all(f, cases);
    // A key that does not verify is an answer, not an error.
    let answer = f.http("POST", "/v1/verify", Some(json!({"key": "nope"})));
    assert_eq!(answer.status, 200);
    let mut body = answer.body.clone();
    // On PostgreSQL it also names the newest change the daemon had applied.
    if backend::postgres().is_some() {
        assert!(body["seq"].is_u64(), "{body}");
        body.as_object_mut().unwrap().remove("seq");
    }
    assert_eq!(body, json!({"valid": false, "code": "invalid_key"}));

    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("GET", "/v1/audit?after=x", "", 400, "invalid_field", Some("after")),
        ("GET", "/v1/audit?limit=0", "", 400, "invalid_field", Some("limit")),
        ("GET", "/v1/audit/verify?x=1", "", 400, "invalid_field", Some("x")),
    ];
    check_all(f, cases);
}

/// Outside `/v1` too, a path nothing serves answers problem+json, as the API does (it was
/// axum's empty 404), and so does a method a path does not serve.
#[test]
fn a_path_nothing_serves_is_a_problem_too() {
    let s = setup();
    let d = &s.f.daemon;
    for path in ["/nope", "/v2/keys", "/healthz/x", "/console-not"] {
        d.http("GET", path, None, None).problem(404, "not_found");
    }
    d.http("POST", "/healthz", None, None)
        .problem(405, "method_not_allowed");
}

#[test]
fn open_endpoints_need_no_key() {
    let s = setup();
    let d = &s.f.daemon;
    let health = d.http("GET", "/healthz", None, None);
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");

    let metrics = d.http("GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(metrics.text.contains("# TYPE"), "{}", metrics.text);

    let openapi = d.http("GET", "/openapi.json", None, None);
    assert_eq!(openapi.status, 200);
    assert!(openapi.body["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/keys",
        "/v1/keys/{id}/rotate",
        "/v1/users",
        "/v1/groups",
        "/v1/verify",
        "/v1/audit",
    ] {
        assert!(
            openapi.body["paths"].get(path).is_some(),
            "{path} is documented"
        );
    }
}
