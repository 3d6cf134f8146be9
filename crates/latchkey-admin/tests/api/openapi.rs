//! The OpenAPI document states every status an operation can answer and every input rule
//! the server enforces.

use latchkey_core::Permission;
use serde_json::{Value, json};

use crate::common::Harness;

async fn document() -> Value {
    Harness::new()
        .send("GET", "/openapi.json", None, None)
        .await
        .ok(200)
}

/// Follows a `$ref` to the component it names.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// The schema `name`; of one tied to a rule on its members (`allOf` the derived object and
/// the rule: `openapi/member_rules.rs`), the derived object, which holds the members.
fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    match schema["allOf"][0].is_object() {
        true => &schema["allOf"][0],
        false => schema,
    }
}

/// Every `$ref` anywhere in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                found.push(reference.clone());
            }
            map.values().for_each(|v| references(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

/// A reference to a schema the document lacks makes fuzzers and generators skip (or
/// refuse) that part: every one resolves.
#[tokio::test]
async fn every_reference_resolves() {
    let doc = document().await;
    let mut found = Vec::new();
    references(&doc, &mut found);
    assert!(found.len() > 50, "{}", found.len());
    for reference in found {
        let path = reference
            .strip_prefix("#/")
            .unwrap_or_else(|| panic!("not a local reference: {reference}"));
        let target = path.split('/').fold(&doc, |at, part| &at[part]);
        assert!(target.is_object(), "{reference} resolves to nothing");
    }
}

#[tokio::test]
async fn every_operation_states_the_statuses_of_the_layers_around_it() {
    let doc = document().await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            let what = format!("{method} {path}: {:?}", responses.keys());
            if path.starts_with("/v1/") {
                assert!(
                    has("400")
                        && has("401")
                        && has("403")
                        && has("429")
                        && has("500")
                        && has("503"),
                    "{what}"
                );
                let several = responses["400"]["description"].as_str().unwrap();
                assert!(several.contains("`invalid_request`"), "{what}");
                // The headers those answers carry (parity hunt INFO 8).
                let headers = |status: &str| responses[status]["headers"].clone();
                for status in ["400", "401", "403"] {
                    assert!(
                        headers(status)["WWW-Authenticate"].is_object(),
                        "{what}: {status}"
                    );
                }
                for name in ["Retry-After", "RateLimit-Policy", "RateLimit"] {
                    assert!(headers("429")[name].is_object(), "{what}: {name}");
                }
                assert_eq!(
                    headers("503")["Retry-After"]["schema"]["type"],
                    "integer",
                    "{what}"
                );
            }
            if let Some(body) = op.get("requestBody") {
                assert!(
                    has("400") && has("408") && has("413") && has("415"),
                    "{what}"
                );
                let body = resolve(&doc, &body["content"]["application/json"]["schema"]);
                assert_eq!(body["additionalProperties"], false, "{what}");
            }
            if path.contains('{') {
                assert!(has("404"), "{what}");
            }
            let record = ["/v1/groups", "/v1/users", "/v1/keys"];
            if method != "get" && record.iter().any(|r| path.starts_with(r)) {
                assert!(has("507"), "{what}");
            }
            let query = op["parameters"].as_array().into_iter().flatten();
            if query.clone().any(|p| p["in"] == "query") {
                assert!(has("400"), "{what}");
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = &response["content"]["application/problem+json"];
                    assert!(content.is_object(), "{what}: {status} is not problem+json");
                }
            }
        }
    }
    let events = &doc["paths"]["/v1/events"]["get"]["responses"];
    assert!(events["429"].is_object());
    // A tenant-bound caller naming another tenant (RFC hunt L9).
    for (path, method) in [("/v1/users", "post"), ("/v1/users/{id}", "patch")] {
        let refused = &doc["paths"][path][method]["responses"]["403"]["description"];
        assert!(
            refused.as_str().unwrap().contains("`tenant_forbidden`"),
            "{path}: {refused}"
        );
    }
    // The answers with a secret, or with every key's hash, say they are in no cache.
    for (path, method, status) in [
        ("/v1/keys", "post", "201"),
        ("/v1/keys/{id}/rotate", "post", "201"),
        ("/v1/backup", "get", "200"),
    ] {
        let created = &doc["paths"][path][method]["responses"][status];
        assert!(
            created["headers"]["Cache-Control"].is_object(),
            "{path}: {created}"
        );
    }
    let metrics = &doc["paths"]["/metrics"]["get"]["responses"];
    assert!(metrics["500"].is_object() && metrics["503"].is_object());
    assert!(metrics["401"]["headers"]["WWW-Authenticate"].is_object());
    let health = &doc["paths"]["/healthz"]["get"]["responses"];
    assert!(health["503"]["headers"]["Retry-After"].is_object());
}

/// The document names every code a problem can carry: each refusal of a key (the layer
/// answers the management API's callers too) and each lifecycle conflict.
#[tokio::test]
async fn the_problem_s_code_names_every_code_answered() {
    use latchkey_core::{Conflict, VerifyError};

    let doc = document().await;
    let listed = schema(&doc, "Problem")["properties"]["code"]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    let limited = latchkey_core::meter::RateLimited {
        limit: latchkey_core::RateLimit {
            name: "default".into(),
            limit: 1,
            window_seconds: 1,
        },
        retry_after_seconds: 1,
    };
    let refusals = [
        VerifyError::Invalid,
        VerifyError::Disabled,
        VerifyError::Revoked,
        VerifyError::Expired,
        VerifyError::UserDisabled,
        VerifyError::Unavailable(String::new()),
        VerifyError::IpNotAllowed,
        VerifyError::InsufficientPermission,
        VerifyError::RateLimited(Box::new(limited)),
        VerifyError::UsageExceeded {
            retry_after_seconds: None,
        },
    ];
    let conflicts = [
        Conflict::KeyNotRevoked,
        Conflict::KeyRevoked,
        Conflict::KeyRotated,
        Conflict::KeyExpired,
        Conflict::LastAdminKey,
    ];
    let codes = refusals
        .iter()
        .map(VerifyError::code)
        .chain(conflicts.iter().map(Conflict::code));
    for code in codes {
        assert!(listed.contains(&format!("`{code}`")), "{code} in {listed}");
    }
}

/// Every member of a refusal's body, the layer's 429s included, is a property of the
/// `Problem` schema: a generated client reads `retry_after`, `limit` and `permission`.
#[tokio::test]
async fn the_problem_schema_holds_every_member_of_a_refusal() {
    let h = Harness::new();
    let doc = h.send("GET", "/openapi.json", None, None).await.ok(200);
    let properties = schema(&doc, "Problem")["properties"].as_object().unwrap();
    h.created(
        "/v1/users",
        json!({"name": "reader", "permissions": ["latchkey:keys:read"]}),
    )
    .await;
    let mut refusals = Vec::new();
    let limited = json!({"rate_limits": [{"name": "slow", "limit": 1, "window_seconds": 60}]});
    let spent = json!({"credits": {"remaining": 1, "refill": {"amount": 1, "interval": "day"}}});
    for (usage, code) in [(limited, "rate_limited"), (spent, "usage_exceeded")] {
        let mut body = json!({"name": code, "user_id": "reader"});
        body.as_object_mut()
            .unwrap()
            .extend(usage.as_object().unwrap().clone());
        let key = h.created("/v1/keys", body).await;
        let key = key["secret"].as_str().unwrap();
        h.get_as(key, "/v1/keys").await;
        let refused = h.send("GET", "/v1/keys", Some(key), None).await;
        let problem = refused.problem(429, code);
        assert!(problem["retry_after"].as_u64().is_some(), "{problem}");
        refusals.push(problem);
    }
    let key = h.key_for("reader").await;
    let key = key["secret"].as_str().unwrap();
    let refused = h.send("GET", "/v1/users", Some(key), None).await;
    let problem = refused.problem(403, "insufficient_permission");
    assert_eq!(problem["permission"], "latchkey:users:read");
    refusals.push(problem);
    for problem in refusals {
        for member in problem.as_object().unwrap().keys() {
            assert!(properties.contains_key(member), "{member} of {problem}");
        }
    }
}

#[tokio::test]
async fn bodies_state_the_limits_on_input() {
    let doc = document().await;
    let property = |schema_name: &str, field: &str| -> Value {
        schema(&doc, schema_name)["properties"][field].clone()
    };
    // Permission sets: at most 256, each a permission.
    for (schema_name, field) in [
        ("CreateGroup", "permissions"),
        ("UpdateGroup", "add_permissions"),
        ("CreateUser", "permissions"),
        ("UpdateUser", "remove_permissions"),
        ("CreateKey", "scopes"),
    ] {
        let set = property(schema_name, field);
        assert_eq!(set["maxItems"], 256, "{schema_name}.{field}: {set}");
        assert_eq!(set["items"]["$ref"], "#/components/schemas/Permission");
    }
    let permission = schema(&doc, "Permission");
    assert_eq!(permission["maxLength"], 128);
    // Groups: at most 64 references.
    for field in ["groups", "add_groups"] {
        let schema_name = if field == "groups" {
            "CreateUser"
        } else {
            "UpdateUser"
        };
        assert_eq!(property(schema_name, field)["maxItems"], 64);
    }
    // Names, descriptions, tenants.
    let bound = |name: &str| schema(&doc, name)["maxLength"].clone();
    assert_eq!(bound("PrincipalName"), 64);
    assert_eq!(bound("Label"), 128);
    assert_eq!(bound("Tenant"), 128);
    assert_eq!(bound("Description"), 1024);
    assert_eq!(
        property("CreateUser", "tenant_id")["oneOf"][0]["$ref"],
        "#/components/schemas/Tenant"
    );
    assert_eq!(
        property("CreateKey", "name")["$ref"],
        "#/components/schemas/Label"
    );
    // Integers: types and bounds as the server reads them.
    let grace = property("RotateKey", "grace_seconds");
    assert_eq!(
        (&grace["minimum"], &grace["maximum"]),
        (&0.into(), &31_536_000.into())
    );
    let count = property("UsageItem", "count");
    assert_eq!(count["format"], "uint64");
    assert_eq!(count["minimum"], 1);
    assert_eq!(count["maximum"], u64::MAX);
    // Usage control.
    assert_eq!(property("CreateKey", "rate_limits")["maxItems"], 8);
    assert_eq!(property("CreateKey", "allowed_ips")["maxItems"], 64);
    assert_eq!(property("CreateKey", "allowed_ips")["minItems"], 1);
    assert_eq!(property("UpdateKey", "allowed_ips")["minItems"], 1);
    for field in ["name", "limit", "window_seconds"] {
        assert!(
            schema(&doc, "RateLimit")["properties"][field].is_object(),
            "{field}"
        );
    }
    for field in ["remaining", "add", "refill"] {
        assert!(
            schema(&doc, "CreditsChange")["properties"][field].is_object(),
            "{field}"
        );
    }
    assert_eq!(
        schema(&doc, "RefillInterval")["enum"],
        serde_json::json!(["day", "month"])
    );
    for field in ["client_ip", "cost"] {
        assert!(property("VerifyRequest", field).is_object(), "{field}");
    }
    // Enums.
    assert_eq!(
        schema(&doc, "Env")["enum"],
        serde_json::json!(["live", "test"])
    );
    // List parameters.
    for path in ["/v1/keys", "/v1/audit"] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        let size = &resolve(&doc, &limit["schema"])["anyOf"][0];
        assert_eq!(size["minimum"], 1, "{path}");
        assert_eq!(size["maximum"], 1000, "{path}");
    }
    let events = doc["paths"]["/v1/events"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let heartbeat = events.iter().find(|p| p["name"] == "heartbeat_ms").unwrap();
    assert_eq!(heartbeat["schema"]["minimum"], 1000);
}

/// The bounds the store enforces are the ones the document states, each read from
/// `latchkey_core::limits`.
#[tokio::test]
async fn the_stated_bounds_are_the_enforced_ones() {
    use latchkey_core::limits::{
        MAX_CREDITS, MAX_CURSOR_BYTES, MAX_IMPORT_ITEMS, MAX_LIST_LIMIT, MAX_SEARCH_BYTES,
    };
    let doc = document().await;
    let property = |name: &str| {
        let (schema_name, field) = name.split_once('.').unwrap();
        schema(&doc, schema_name)["properties"][field].clone()
    };
    let amounts = [
        ("Credits.remaining", 0),
        ("Refill.amount", 1),
        ("CreditsChange.remaining", 0),
        ("CreditsChange.add", 0),
    ];
    for (name, least) in amounts {
        let amount = (name, property(name));
        assert_eq!(amount.1["maximum"], MAX_CREDITS, "{amount:?}");
        assert_eq!(amount.1["minimum"], least, "{amount:?}");
    }
    let parameter = |path: &str, name: &str| -> Value {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let param = params.iter().find(|p| p["name"] == name).unwrap();
        resolve(&doc, &param["schema"]).clone()
    };
    assert_eq!(parameter("/v1/keys", "q")["maxLength"], MAX_SEARCH_BYTES);
    for path in ["/v1/keys", "/v1/users", "/v1/groups"] {
        let cursor = parameter(path, "cursor");
        assert_eq!(cursor["maxLength"], MAX_CURSOR_BYTES, "{path}: {cursor}");
        let pattern = regex::Regex::new(cursor["pattern"].as_str().unwrap()).unwrap();
        // What a list answers as `next_cursor` matches; what the server refuses does not.
        let sealed = "0f".repeat(12 + 16 + 20);
        assert!(pattern.is_match(&sealed) && pattern.is_match(""), "{path}");
        for refused in ["zz", "abc", &"0f".repeat(27)] {
            assert!(!pattern.is_match(refused), "{path}: {refused}");
        }
    }
    // Objects inside the bodies refuse unknown members as the bodies do.
    for name in ["Credits", "Refill", "RateLimit", "CreditsChange"] {
        assert_eq!(schema(&doc, name)["additionalProperties"], false, "{name}");
    }
    // An empty query value counts as absent, and the integers' schemas say so.
    let empty = serde_json::json!({"type": "string", "maxLength": 0});
    for (path, name) in [
        ("/v1/keys", "limit"),
        ("/v1/users", "limit"),
        ("/v1/groups", "limit"),
        ("/v1/audit", "limit"),
        ("/v1/audit", "after"),
    ] {
        let value = parameter(path, name);
        assert_eq!(value["anyOf"][1], empty, "{path} {name}: {value}");
    }
    assert_eq!(
        schema(&doc, "PageSize")["anyOf"][0]["maximum"],
        MAX_LIST_LIMIT
    );
    let h = Harness::new();
    for uri in [
        "/v1/keys?limit=&cursor=",
        "/v1/users?limit=&cursor=",
        "/v1/groups?limit=&cursor=",
        "/v1/audit?after=&limit=",
    ] {
        h.get(uri).await.ok(200);
    }
    let items = property("ImportKeys.items");
    assert_eq!(items["maxItems"], MAX_IMPORT_ITEMS, "{items}");
    // A lease's client address is IPv4 or IPv6, as a verification's is.
    let lease_ip = property("LeaseRequest.client_ip");
    let verify_ip = property("VerifyRequest.client_ip");
    assert_eq!(
        lease_ip["oneOf"][0]["$ref"], verify_ip["oneOf"][0]["$ref"],
        "{lease_ip} / {verify_ip}"
    );
    assert_eq!(
        schema(&doc, "IpAddress")["oneOf"],
        serde_json::json!([
            {"type": "string", "format": "ipv4"},
            {"type": "string", "format": "ipv6"},
        ])
    );
}

/// The document's patterns accept exactly what the server's parsers accept.
#[tokio::test]
async fn the_patterns_match_the_parsers() {
    let doc = document().await;
    let pattern = |name: &str| {
        let text = schema(&doc, name)["pattern"].as_str().unwrap().to_owned();
        regex::Regex::new(&text).unwrap()
    };
    let permission = pattern("Permission");
    for text in [
        "*",
        "orders",
        "orders:read",
        "orders:*",
        "a.b-c_d:e",
        "orders:*:read",
        "Orders",
        "orders:",
        ":read",
        "orders::read",
        "**",
        "orders:**",
        "",
        "ordérs",
    ] {
        let parsed = Permission::parse(text).is_ok();
        assert_eq!(permission.is_match(text), parsed, "{text:?}");
    }
    // CIDRs, or one address: the pattern accepts a subset of what the parser does (it
    // leaves out IPv4-mapped IPv6 forms and leading zeros, which ipnet takes), never more.
    let cidr = pattern("Cidr");
    for (text, in_pattern) in [
        ("203.0.113.0/24", true),
        ("10.0.0.1/8", true),
        ("0.0.0.0/0", true),
        ("2001:db8::/32", true),
        ("::/0", true),
        ("fe80::1/128", true),
        ("1:2:3:4:5:6:7:8/64", true),
        ("203.0.113.7", true),
        ("2001:db8::1", true),
        ("203.0.113.0/33", false),
        ("203.0.113.0/", false),
        ("256.0.0.0/8", false),
        ("01.2.3.4/8", false),
        ("2001:db8::/129", false),
        ("1::2::3/64", false),
        ("", false),
    ] {
        let parsed =
            text.parse::<ipnet::IpNet>().is_ok() || text.parse::<std::net::IpAddr>().is_ok();
        assert_eq!(cidr.is_match(text), in_pattern, "{text:?}");
        assert!(parsed || !in_pattern, "{text:?} matches but does not parse");
    }
    let free_text = pattern("Label");
    for (text, ok) in [
        ("deploy bot", true),
        ("ünïcödé ✓", true),
        ("a\nb", false),
        ("tab\there", false),
        ("\u{7f}", false),
        ("\u{9f}", false),
        ("evil\u{202e}txt", false),
        ("\u{2066}x", false),
        ("\u{61c}", false),
        ("line\u{2028}break", false),
        ("zero\u{200d}width joiner", true),
    ] {
        assert_eq!(free_text.is_match(text), ok, "{text:?}");
    }
    // Every character below U+10000, in the three patterns of free text, as the parser
    // judges it (the tenant's lists none above: those few are refused by the server only).
    let (description, tenant) = (pattern("Description"), pattern("Tenant"));
    use latchkey_core::limits::{is_forbidden_char, is_forbidden_in_id};
    for c in (0..0x1_0000).filter_map(char::from_u32) {
        let text = format!("a{c}b");
        assert_eq!(free_text.is_match(&text), !is_forbidden_char(c), "{c:?}");
        assert_eq!(description.is_match(&text), !is_forbidden_char(c), "{c:?}");
        assert_eq!(tenant.is_match(&text), !is_forbidden_in_id(c), "{c:?}");
    }
    for (text, ok) in [
        ("acme", true),
        ("a b", true),
        (" acme", false),
        ("acme\u{a0}", false),
        ("a\u{200b}", false),
        ("\u{feff}x", false),
    ] {
        assert_eq!(tenant.is_match(text), ok, "{text:?}");
    }
    let name = pattern("PrincipalName");
    for (text, ok) in [("ci-bot@example.com", true), ("a b", false), ("", false)] {
        assert_eq!(name.is_match(text), ok, "{text:?}");
    }
    assert!(name.is_match(&"a".repeat(64)) && !name.is_match(&"a".repeat(65)));
}

/// An audit event's `changes` are named fields of `Change`, whose `from` and `to` may be
/// any JSON value (a name, a flag, a list of limits, `null`).
#[tokio::test]
async fn an_audit_event_s_changes_are_described() {
    let doc = document().await;
    let changes = &schema(&doc, "AuditEvent")["properties"]["changes"];
    assert_eq!(
        changes["additionalProperties"]["$ref"], "#/components/schemas/Change",
        "{changes}"
    );
    let change = schema(&doc, "Change");
    assert_eq!(change["required"], serde_json::json!(["from", "to"]));
    for side in ["from", "to"] {
        let types = change["properties"][side]["type"].as_array().unwrap();
        for kind in ["null", "boolean", "number", "string", "array", "object"] {
            assert!(types.contains(&kind.into()), "{side}: {kind}");
        }
    }
}

/// The rules that tie a body's members together are in the document (audit s60 L3: in
/// words only), and a JSON Schema validator reading it takes exactly the bodies the server
/// takes: a credits change is `add` alone, or `remaining`, `refill` or both; a refill's
/// `day_of_month` goes with a monthly one.
#[tokio::test]
async fn a_validator_reading_the_document_takes_the_credits_changes_the_server_takes() {
    let h = Harness::new();
    let doc = h.send("GET", "/openapi.json", None, None).await.ok(200);
    let schema = json!({
        "$ref": "#/components/schemas/CreditsChange",
        "components": doc["components"],
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    h.user("metered", &[]).await;
    let body = json!({"name": "k", "user_id": "metered", "credits": {"remaining": 10}});
    let key = h.post("/v1/keys", body).await.ok(201);
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());

    let monthly = json!({"amount": 5, "interval": "month", "day_of_month": 3});
    let daily = json!({"amount": 5, "interval": "day"});
    let taken = [
        json!({"add": 1}),
        json!({"remaining": 4}),
        json!({"refill": null}),
        json!({"refill": daily}),
        json!({"refill": {"amount": 5, "interval": "day", "day_of_month": null}}),
        json!({"remaining": 4, "refill": monthly}),
    ];
    let refused = [
        json!({}),
        json!({"remaining": 1, "add": 1}),
        json!({"add": 1, "refill": null}),
        json!({"add": 1, "remaining": 1, "refill": daily}),
        json!({"refill": {"amount": 5, "interval": "day", "day_of_month": 3}}),
    ];
    for (bodies, status) in [(&taken[..], 200), (&refused[..], 400)] {
        for change in bodies {
            assert_eq!(validator.is_valid(change), status == 200, "{change}");
            let answer = h.patch(&path, json!({"credits": change})).await;
            assert_eq!(answer.status.as_u16(), status, "{change}: {}", answer.text);
        }
    }
}
