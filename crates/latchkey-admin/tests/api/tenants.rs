//! Tenants: a caller whose user has a `tenant_id` sees and changes only its tenant
//! (organization); every other user, key and audit event answers as if absent.

use serde_json::{Value, json};

use crate::common::Harness;

/// Everything a tenant's own administrator needs, short of `*`.
const TENANT_ADMIN: &[&str] = &[
    "latchkey:users:read",
    "latchkey:users:write",
    "latchkey:keys:read",
    "latchkey:keys:write",
    "latchkey:groups:read",
    "latchkey:groups:write",
    "latchkey:audit:read",
    "orders:*",
];

/// A harness with tenants `acme` and `globex`, a global user, one key each, and a key of
/// `acme`'s own administrator; answers (harness, that administrator's key, globex's key id).
async fn two_tenants(organization: Option<&str>) -> (Harness, String, String) {
    two_tenants_in(Harness::new(), organization).await
}

async fn two_tenants_in(h: Harness, organization: Option<&str>) -> (Harness, String, String) {
    let mut boss = json!({"name": "acme-admin", "permissions": TENANT_ADMIN, "tenant_id": "acme"});
    if let Some(org) = organization {
        boss["organization_id"] = json!(org);
    }
    h.post("/v1/users", boss).await.ok(201);
    let boss_key = h.key_for("acme-admin").await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    for (name, tenant) in [
        ("acme-bot", json!("acme")),
        ("globex-bot", json!("globex")),
        ("global-bot", json!(null)),
    ] {
        let mut user = json!({"name": name, "permissions": ["orders:read"], "tenant_id": tenant});
        if let Some(org) = organization {
            user["organization_id"] = json!(org);
        }
        h.post("/v1/users", user).await.ok(201);
        h.created("/v1/keys", json!({"name": name, "user_id": name}))
            .await;
    }
    let globex_key = h.get("/v1/keys?user_id=globex-bot").await.ok(200)["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (h, boss_key, globex_key)
}

fn names(list: &Value, field: &str) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[field].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_tenant_caller_reads_only_its_tenant() {
    let (h, boss, globex_key) = two_tenants(None).await;
    let users = h.get_as(&boss, "/v1/users").await;
    assert_eq!(names(&users, "name"), ["acme-admin", "acme-bot"]);
    let keys = h.get_as(&boss, "/v1/keys").await;
    assert_eq!(names(&keys, "name"), ["acme-bot", "k"]);
    for uri in [
        "/v1/users/globex-bot".to_owned(),
        "/v1/users/global-bot".to_owned(),
        "/v1/users/admin".to_owned(),
        format!("/v1/keys/{globex_key}"),
    ] {
        h.send("GET", &uri, Some(&boss), None)
            .await
            .problem(404, "not_found");
    }
    let r = h
        .send("GET", "/v1/keys?user_id=globex-bot", Some(&boss), None)
        .await;
    assert_eq!(r.problem(404, "not_found")["field"], "user_id");
    // The audit trail: only events about its tenant's users.
    let acme: Vec<Value> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].clone())
        .collect();
    let events = h.get_as(&boss, "/v1/audit?limit=1000").await;
    let events = events["items"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| acme.contains(&e["user_id"])),
        "{events:?}"
    );
    let all = h.get("/v1/audit?limit=1000").await.ok(200);
    assert!(all["items"].as_array().unwrap().len() > events.len());
    // A global caller still sees everything.
    assert_eq!(
        h.get("/v1/users").await.ok(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn a_tenant_caller_changes_nothing_outside_its_tenant() {
    let (h, boss, globex_key) = two_tenants(None).await;
    let seq = h.store.last_seq().unwrap();
    let as_boss = |method: &'static str, uri: String, body: Option<Value>| {
        let boss = boss.clone();
        let h = &h;
        async move { h.send(method, &uri, Some(&boss), body).await }
    };
    for (method, uri, body) in [
        (
            "PATCH",
            "/v1/users/globex-bot".to_owned(),
            Some(json!({"enabled": false})),
        ),
        ("DELETE", "/v1/users/globex-bot".to_owned(), None),
        (
            "PATCH",
            "/v1/users/global-bot".to_owned(),
            Some(json!({"name": "x"})),
        ),
        (
            "PATCH",
            format!("/v1/keys/{globex_key}"),
            Some(json!({"enabled": false})),
        ),
        ("POST", format!("/v1/keys/{globex_key}/revoke"), None),
        (
            "POST",
            format!("/v1/keys/{globex_key}/rotate"),
            Some(json!({"grace_seconds": 0})),
        ),
        ("DELETE", format!("/v1/keys/{globex_key}"), None),
        (
            "POST",
            "/v1/keys".to_owned(),
            Some(json!({"name": "mine", "user_id": "globex-bot"})),
        ),
        (
            "POST",
            "/v1/keys/import".to_owned(),
            Some(json!({"user_id": "globex-bot",
                        "items": [{"key": "acme_chosen_0123456789abcdef"}]})),
        ),
        ("POST", "/v1/users/globex-bot/revoke-keys".to_owned(), None),
    ] {
        as_boss(method, uri, body).await.problem(404, "not_found");
    }
    // "As if absent": the answer for another tenant's user is the answer for no user.
    let detail = |r: crate::common::Resp, name: &str| {
        r.problem(404, "not_found")["detail"]
            .as_str()
            .unwrap()
            .replace(name, "NAME")
    };
    for method in ["GET", "PATCH", "DELETE"] {
        let body = (method == "PATCH").then(|| json!({"enabled": false}));
        let hidden = as_boss(method, "/v1/users/globex-bot".to_owned(), body.clone()).await;
        let absent = as_boss(method, "/v1/users/nobody".to_owned(), body).await;
        assert_eq!(detail(hidden, "globex-bot"), detail(absent, "nobody"));
    }
    // Placing a user in another tenant, or moving one there, is forbidden.
    for (method, uri, body) in [
        (
            "POST",
            "/v1/users",
            json!({"name": "spy", "tenant_id": "globex"}),
        ),
        (
            "PATCH",
            "/v1/users/acme-bot",
            json!({"tenant_id": "globex"}),
        ),
        ("PATCH", "/v1/users/acme-bot", json!({"tenant_id": null})),
    ] {
        let r = as_boss(method, uri.to_owned(), Some(body)).await;
        assert_eq!(r.problem(403, "tenant_forbidden")["field"], "tenant_id");
    }
    assert_eq!(h.store.last_seq().unwrap(), seq, "nothing was written");
    assert!(
        h.get("/v1/users/globex-bot").await.ok(200)["enabled"]
            .as_bool()
            .unwrap()
    );

    // What it creates lands in its tenant, whatever the body says about it.
    let made = as_boss(
        "POST",
        "/v1/users".to_owned(),
        Some(json!({"name": "new-bot"})),
    )
    .await
    .ok(201);
    assert_eq!(made["tenant_id"], "acme");
    let same = as_boss(
        "POST",
        "/v1/users".to_owned(),
        Some(json!({"name": "new-bot2", "tenant_id": "acme", "organization_id": "east"})),
    )
    .await
    .ok(201);
    assert_eq!(
        (same["tenant_id"].clone(), same["organization_id"].clone()),
        (json!("acme"), json!("east"))
    );
    as_boss(
        "POST",
        "/v1/keys".to_owned(),
        Some(json!({"name": "k2", "user_id": "new-bot"})),
    )
    .await
    .ok(201);
    // Groups are global records: a bound caller writes none of them, whoever their
    // members are (another tenant's, only its own, none), and writes nothing trying.
    for (name, member) in [
        ("shared", Some("globex-bot")),
        ("own", Some("acme-bot")),
        ("empty", None),
    ] {
        h.created(
            "/v1/groups",
            json!({"name": name, "permissions": ["orders:read"]}),
        )
        .await;
        if let Some(member) = member {
            h.patch(
                &format!("/v1/users/{member}"),
                json!({"add_groups": [name]}),
            )
            .await
            .ok(200);
        }
    }
    let seq = h.store.last_seq().unwrap();
    let mut writes = vec![(
        "POST",
        "/v1/groups".to_owned(),
        Some(json!({"name": "squat", "permissions": ["orders:read"]})),
    )];
    for name in ["shared", "own", "empty"] {
        writes.push((
            "PATCH",
            format!("/v1/groups/{name}"),
            Some(json!({"name": format!("{name}2")})),
        ));
        writes.push((
            "PATCH",
            format!("/v1/groups/{name}"),
            Some(json!({"add_permissions": ["orders:write"]})),
        ));
        writes.push(("DELETE", format!("/v1/groups/{name}"), None));
    }
    for (method, uri, body) in writes {
        let refused = as_boss(method, uri.clone(), body)
            .await
            .problem(403, "tenant_forbidden");
        // It says why, and names no field of a request that has none.
        assert!(refused.get("field").is_none(), "{method} {uri}: {refused}");
        let detail = refused["detail"].as_str().unwrap();
        assert!(detail.contains("groups are global"), "{detail}");
    }
    assert_eq!(h.store.last_seq().unwrap(), seq, "nothing was written");
    // Groups are global and readable; assignable within its permissions.
    as_boss(
        "PATCH",
        "/v1/users/acme-bot".to_owned(),
        Some(json!({"add_groups": ["shared"]})),
    )
    .await
    .ok(200);
}

#[tokio::test]
async fn an_organization_binds_within_the_tenant() {
    let (h, boss, _) = two_tenants(Some("east")).await;
    h.created(
        "/v1/users",
        json!({"name": "west-bot", "tenant_id": "acme", "organization_id": "west"}),
    )
    .await;
    let users = h.get_as(&boss, "/v1/users").await;
    assert_eq!(names(&users, "name"), ["acme-admin", "acme-bot"]);
    h.send("GET", "/v1/users/west-bot", Some(&boss), None)
        .await
        .problem(404, "not_found");
    let made = h
        .request_as(&boss, "POST /v1/users", &json!({"name": "e2"}))
        .await
        .ok(201);
    assert_eq!(made["organization_id"], "east");
    let r = h
        .request_as(
            &boss,
            "POST /v1/users",
            &json!({"name": "w2", "organization_id": "west"}),
        )
        .await;
    assert_eq!(
        r.problem(403, "tenant_forbidden")["field"],
        "organization_id"
    );
    let r = h
        .request_as(
            &boss,
            "PATCH /v1/users/acme-bot",
            &json!({"organization_id": "west"}),
        )
        .await;
    r.problem(403, "tenant_forbidden");
}

#[tokio::test]
async fn a_tenant_bound_key_reads_neither_the_change_feed_nor_a_backup_nor_the_chain_s_check() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "acme-verifier", "permissions": ["latchkey:verify", "latchkey:backup", "latchkey:audit:read"], "tenant_id": "acme"})).await;
    let key = h.key_for("acme-verifier").await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Each covers every tenant's records: refused whole rather than narrowed.
    for uri in ["/v1/events", "/v1/backup", "/v1/audit/verify"] {
        let refused = h
            .send("GET", uri, Some(&key), None)
            .await
            .problem(403, "tenant_forbidden");
        // It says why, and names no field of a request that has none.
        assert!(refused.get("field").is_none(), "{refused}");
        let detail = refused["detail"].as_str().unwrap();
        assert!(detail.contains("covers every tenant"), "{detail}");
    }
}

#[tokio::test]
async fn a_tenant_bound_verifier_knows_only_its_tenant_s_keys() {
    let (h, _, globex_key) = two_tenants(None).await;
    h.created(
        "/v1/users",
        json!({"name": "acme-verifier", "permissions": ["latchkey:verify"], "tenant_id": "acme"}),
    )
    .await;
    let verifier = h.key_for("acme-verifier").await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_of = |user: &'static str| {
        let h = &h;
        async move {
            h.created("/v1/keys", json!({"name": "more", "user_id": user}))
                .await["secret"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (acme, globex) = (secret_of("acme-bot").await, secret_of("globex-bot").await);
    let verify = |key: &str| h.post_as(&verifier, "/v1/verify", json!({"key": key}));
    assert_eq!(verify(&acme).await["valid"], true);
    // Another tenant's valid key answers as an unknown one.
    let other = verify(&globex).await;
    assert_eq!(other["valid"], false);
    assert_eq!(other["code"], "invalid_key");
    assert_eq!(other.get("principal"), None, "{other}");
    let lease = h
        .post_as(
            &verifier,
            "/v1/leases",
            json!({"key": globex, "buckets": [{"kind": "credits", "want": 5}]}),
        )
        .await;
    assert_eq!(
        (lease["valid"].clone(), lease["code"].clone()),
        (json!(false), json!("invalid_key"))
    );
    // Whatever its status, another tenant's key is an unknown one, and no use is counted.
    let made = h
        .created(
            "/v1/keys",
            json!({"name": "status", "user_id": "globex-bot"}),
        )
        .await;
    let (id, secret) = (
        made["id"].as_str().unwrap(),
        made["secret"].as_str().unwrap(),
    );
    assert_eq!(verify(secret).await["code"], "invalid_key");
    let key_uri = format!("/v1/keys/{id}");
    assert_eq!(h.get(&key_uri).await.ok(200)["usage_count"], 0);
    h.post(&format!("{key_uri}/revoke"), json!({}))
        .await
        .ok(200);
    assert_eq!(verify(secret).await["code"], "invalid_key");
    // Its own tenant's revoked key keeps its code.
    let own = h
        .created("/v1/keys", json!({"name": "own", "user_id": "acme-bot"}))
        .await;
    let own_uri = format!("/v1/keys/{}", own["id"].as_str().unwrap());
    h.post(&format!("{own_uri}/revoke"), json!({}))
        .await
        .ok(200);
    assert_eq!(
        verify(own["secret"].as_str().unwrap()).await["code"],
        "key_revoked"
    );
    // Its usage figures are dropped, as an unknown key's.
    let uri = format!("/v1/keys/{globex_key}");
    let before = h.get(&uri).await.ok(200);
    let report = json!({"items": [{"key_id": globex_key, "count": 1000,
                                   "last_used_at": before["created_at"]}]});
    let r = h
        .send("POST", "/v1/usage", Some(&verifier), Some(report))
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text);
    let before = before["usage_count"].clone();
    assert_eq!(h.get(&uri).await.ok(200)["usage_count"], before);
    // A figure from before the key was created answers as an unknown key's too: were the
    // key checked first, 400 would tell that it exists.
    let unknown = uuid::Uuid::now_v7();
    for key_id in [unknown.to_string(), globex_key.to_string()] {
        let report = json!({"items": [{"key_id": key_id, "count": 1,
                                       "last_used_at": "2001-01-01T00:00:00Z"}]});
        let r = h
            .send("POST", "/v1/usage", Some(&verifier), Some(report))
            .await;
        assert_eq!(r.status.as_u16(), 204, "{key_id}: {}", r.text);
    }
    assert_eq!(h.get(&uri).await.ok(200)["usage_count"], before);
}

#[tokio::test]
async fn a_list_cursor_shows_nothing_of_the_records_a_bound_caller_was_passed_over() {
    // A store of more users than a bound caller's list reads to find its tenant's: the
    // list reads the index of every key, passing over the other tenants'.
    let h = Harness::configured(|c| c.tenant_list_users(0));
    let (h, boss, _) = two_tenants_in(h, None).await;
    let globex = h.get("/v1/users/globex-bot").await.ok(200)["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // More of globex's keys than one page scans: acme's page ends on one of them.
    let keys: Vec<latchkey_core::NewKey> = (0..1_100)
        .map(|i| latchkey_core::NewKey {
            name: format!("globex-secret-{i:04}"),
            user_id: globex,
            ..latchkey_core::NewKey::default()
        })
        .collect();
    h.store
        .create_keys(&latchkey_core::Actor::system(), &keys)
        .unwrap();
    let page = h
        .send("GET", "/v1/keys?sort=name&limit=1000", Some(&boss), None)
        .await
        .ok(200);
    let cursor = page["next_cursor"].as_str().expect("a cursor to go on");
    // "globex" in hex, as the cursor's text would hold it in the clear.
    assert!(
        !cursor.contains("676c6f626578"),
        "the cursor holds another tenant's key name: {cursor}"
    );
    // It goes on, and acme's own keys are all there in the end.
    let mut seen = names(&page, "name");
    let mut next = Some(cursor.to_owned());
    for _ in 0..10 {
        let Some(cursor) = next.take() else { break };
        let uri = format!("/v1/keys?sort=name&limit=1000&cursor={cursor}");
        let page = h.send("GET", &uri, Some(&boss), None).await.ok(200);
        seen.extend(names(&page, "name"));
        next = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(next, None);
    seen.sort();
    assert_eq!(seen, ["acme-bot", "k"]);
}

/// A list's cursor goes on only in the list it came from: not in another tenant's, nor
/// with other filters (trust hunt s56 L2: tenant `acme` replayed `globex`'s cursor, sealed
/// at one of its key names, and learnt where that name sorts among names it chose).
#[tokio::test]
async fn a_cursor_goes_on_only_in_its_own_list() {
    let (h, acme, _) = two_tenants(None).await;
    let boss = json!({"name": "globex-admin", "permissions": TENANT_ADMIN, "tenant_id": "globex"});
    h.post("/v1/users", boss).await.ok(201);
    let globex = h.key_for("globex-admin").await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let cursor = |key: &str, uri: &str| {
        let (key, uri) = (key.to_owned(), uri.to_owned());
        let h = &h;
        async move {
            let page = h.get_as(&key, &uri).await;
            page["next_cursor"].as_str().unwrap().to_owned()
        }
    };
    let refused = |key: &str, uri: String| {
        let key = key.to_owned();
        let h = &h;
        async move {
            let answer = h.send("GET", &uri, Some(&key), None).await;
            let problem = answer.problem(400, "invalid_field");
            assert_eq!(problem["field"], "cursor", "{uri}: {problem}");
        }
    };
    let keys = cursor(&globex, "/v1/keys?sort=name&limit=1").await;
    let users = cursor(&globex, "/v1/users?limit=1").await;
    // In its own list, it goes on.
    let next = h
        .get_as(
            &globex,
            &format!("/v1/keys?sort=name&limit=1&cursor={keys}"),
        )
        .await;
    assert_eq!(next["items"].as_array().unwrap().len(), 1, "{next}");
    h.get_as(&globex, &format!("/v1/users?limit=1&cursor={users}"))
        .await;
    // Another tenant's list, or other filters: refused.
    refused(&acme, format!("/v1/keys?sort=name&cursor={keys}")).await;
    refused(&acme, format!("/v1/users?cursor={users}")).await;
    refused(&h.admin, format!("/v1/keys?sort=name&cursor={keys}")).await;
    for filter in ["q=k", "user_id=globex-bot", "status=active", "env=live"] {
        refused(
            &globex,
            format!("/v1/keys?sort=name&{filter}&cursor={keys}"),
        )
        .await;
    }
    // A global caller's cursor, likewise, with a filter added or dropped.
    let all = cursor(&h.admin, "/v1/keys?sort=name&limit=1").await;
    h.get_as(&h.admin, &format!("/v1/keys?sort=name&cursor={all}"))
        .await;
    refused(
        &h.admin,
        format!("/v1/keys?sort=name&status=active&cursor={all}"),
    )
    .await;
    refused(&acme, format!("/v1/keys?sort=name&cursor={all}")).await;
    let mine = cursor(&h.admin, "/v1/keys?sort=name&limit=1&q=bot").await;
    h.get_as(&h.admin, &format!("/v1/keys?sort=name&q=bot&cursor={mine}"))
        .await;
    refused(&h.admin, format!("/v1/keys?sort=name&cursor={mine}")).await;
}
