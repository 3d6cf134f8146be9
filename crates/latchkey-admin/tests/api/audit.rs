//! `GET /v1/audit` and `GET /v1/audit/verify`.

use serde_json::{Value, json};

use latchkey_core::{Store, StoreConfig};

use crate::common::{Harness, keys_of, send};

#[tokio::test]
async fn lists_changes_oldest_first_with_pages() {
    let h = Harness::new();
    let admin_key = h.store.verify(&h.admin).unwrap().key_id;
    let group = h.created("/v1/groups", json!({"name": "g"})).await;
    let user = h.created("/v1/users", json!({"name": "u"})).await;
    let key = h.key_for("u").await;
    h.revoke(&key).await;

    let all = h.get("/v1/audit").await.ok(200);
    assert_eq!(all["next_cursor"], json!(null));
    let items = all["items"].as_array().unwrap();
    // init wrote three events (admin group, user, key); then ours.
    let actions: Vec<_> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "group.create",
            "user.create",
            "key.create",
            "group.create",
            "user.create",
            "key.create",
            "key.revoke"
        ]
    );
    let seqs: Vec<_> = items.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
    let event = &items[3];
    assert_eq!(
        keys_of(event),
        [
            "action",
            "actor",
            "at",
            "hash",
            "prev_hash",
            "seq",
            "target",
            "user_id"
        ]
    );
    assert_eq!(event["actor"], json!(admin_key));
    assert_eq!(event["target"], group["id"]);
    assert_eq!(items[4]["target"], user["id"]);
    assert_eq!(items[6]["target"], key["id"]);
    assert_eq!(items[6]["user_id"], user["id"]);
    assert_eq!(items[1]["actor"], json!(null));
    assert_eq!(event["prev_hash"], items[2]["hash"]);

    // Pages.
    let first = h.get("/v1/audit?limit=3").await.ok(200);
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert_eq!(first["next_cursor"], "3");
    let second = h.get("/v1/audit?limit=3&after=3").await.ok(200);
    assert_eq!(second["items"][0]["seq"], 4);
    assert_eq!(second["next_cursor"], "6");
    let last = h.get("/v1/audit?limit=3&after=6").await.ok(200);
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert_eq!(last["next_cursor"], json!(null));
    assert_eq!(
        h.get("/v1/audit?after=7").await.ok(200),
        json!({"items": [], "next_cursor": null})
    );

    // Newest first: the latest events in one read, then back from the cursor.
    let newest = h.get("/v1/audit?order=desc&limit=3").await.ok(200);
    let seqs = |page: &serde_json::Value| -> Vec<u64> {
        let items = page["items"].as_array().expect("a page");
        items.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    };
    assert_eq!(seqs(&newest), [7, 6, 5]);
    assert_eq!(newest["next_cursor"], "5");
    let older = h.get("/v1/audit?order=desc&limit=3&before=5").await.ok(200);
    assert_eq!(seqs(&older), [4, 3, 2]);
    let oldest = h.get("/v1/audit?order=desc&limit=3&before=2").await.ok(200);
    assert_eq!(seqs(&oldest), [1]);
    assert_eq!(oldest["next_cursor"], json!(null));
    let between = h.get("/v1/audit?after=2&before=5").await.ok(200);
    assert_eq!(seqs(&between), [3, 4]);
    let none = h.get("/v1/audit?after=4&before=5&order=desc").await.ok(200);
    assert_eq!(none, json!({"items": [], "next_cursor": null}));

    // One record's events: the key's creation and revocation.
    let target = key["id"].as_str().unwrap();
    let about = h
        .get(&format!("/v1/audit?order=desc&target={target}"))
        .await
        .ok(200);
    assert_eq!(seqs(&about), [7, 6]);
    assert_eq!(about["next_cursor"], json!(null));
    let first = h
        .get(&format!("/v1/audit?limit=1&target={target}"))
        .await
        .ok(200);
    assert_eq!(
        (seqs(&first), &first["next_cursor"]),
        (vec![6], &json!("6"))
    );
    let unknown = "01900000-0000-7000-8000-000000000000";
    let none = h.get(&format!("/v1/audit?target={unknown}")).await.ok(200);
    assert_eq!(none, json!({"items": [], "next_cursor": null}));

    for (query, field) in [
        ("target=nope", "target"),
        ("target=01900000000070008000000000000000", "target"),
        ("after=-1", "after"),
        ("after=x", "after"),
        ("before=x", "before"),
        ("order=newest", "order"),
        ("limit=0", "limit"),
        ("since=1", "since"),
    ] {
        let bad = h
            .get(&format!("/v1/audit?{query}"))
            .await
            .problem(400, "invalid_field");
        assert_eq!(bad["field"], field, "{query}");
    }
}

/// Each update, and a rotation, says what it changed: each field's value before and after
/// (usage hunt s56 M7: a disable, an enable and a credit top-up were all one bare
/// `key.update`, and a rotation named no successor). A change that changes nothing writes
/// no event; the chain still checks.
#[tokio::test]
async fn an_update_says_what_it_changed() {
    let h = Harness::new();
    let group = h.group("readers", &["orders:read"]).await;
    h.user("partner", &[]).await;
    let body = json!({"name": "k", "user_id": "partner", "credits": {"remaining": 5}});
    let key = h.created("/v1/keys", body).await;
    let id = key["id"].as_str().unwrap();
    let uri = format!("/v1/keys/{id}");
    let limits = json!([{"name": "default", "limit": 5, "window_seconds": 60}]);
    for patch in [
        json!({"enabled": false}),
        json!({"enabled": true, "name": "renamed"}),
        json!({"credits": {"add": 7}}),
        json!({"allowed_ips": ["10.0.0.0/8"], "rate_limits": limits, "meta": {"plan": "pro"}}),
        json!({"name": "renamed"}),
    ] {
        h.patch(&uri, patch).await.ok(200);
    }
    let successor = h.rotate(id, 60).await;
    let events = h.get(&format!("/v1/audit?target={id}")).await.ok(200);
    let changes: Vec<(String, Value)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e.get("changes").cloned().unwrap_or_default(),
            )
        })
        .collect();
    let change = |from: Value, to: Value| json!({"from": from, "to": to});
    let credits = |remaining: u64| json!({"remaining": remaining, "refill": null});
    let expected = [
        ("key.create", Value::Null),
        (
            "key.update",
            json!({"enabled": change(json!(true), json!(false))}),
        ),
        (
            "key.update",
            json!({"enabled": change(json!(false), json!(true)),
                   "name": change(json!("k"), json!("renamed"))}),
        ),
        (
            "key.update",
            json!({"credits": change(credits(5), credits(12))}),
        ),
        (
            "key.update",
            json!({"allowed_ips": change(json!([]), json!(["10.0.0.0/8"])),
                   "meta": change(Value::Null, json!({"plan": "pro"})),
                   "rate_limits": change(json!([]), limits)}),
        ),
    ];
    assert_eq!(changes.len(), expected.len() + 1, "{events}");
    for ((action, changed), (want_action, want)) in changes.iter().zip(&expected) {
        assert_eq!((action.as_str(), changed), (*want_action, want), "{events}");
    }
    let rotation = &changes[expected.len()];
    assert_eq!(rotation.0, "key.rotate");
    assert_eq!(
        rotation.1["rotated_to"],
        change(Value::Null, successor["id"].clone())
    );
    assert_eq!(rotation.1["credits"], change(credits(12), credits(0)));
    assert_eq!(rotation.1["expires_at"]["from"], Value::Null);
    assert_eq!(
        rotation.1["expires_at"]["to"],
        h.get(&uri).await.ok(200)["expires_at"]
    );

    // Users and groups alike.
    let group_id = group["id"].as_str().unwrap();
    let body = json!({"add_groups": [group_id], "enabled": false});
    h.patch("/v1/users/partner", body).await.ok(200);
    h.patch(
        &format!("/v1/groups/{group_id}"),
        json!({"name": "viewers"}),
    )
    .await
    .ok(200);
    let last = h.get("/v1/audit?order=desc&limit=2").await.ok(200);
    assert_eq!(last["items"][1]["action"], "user.update");
    assert_eq!(
        last["items"][1]["changes"],
        json!({"enabled": change(json!(true), json!(false)),
               "groups": change(json!([]), json!([group_id]))})
    );
    assert_eq!(last["items"][0]["action"], "group.update");
    assert_eq!(
        last["items"][0]["changes"],
        json!({"name": change(json!("readers"), json!("viewers"))})
    );
    let check = h.get("/v1/audit/verify").await.ok(200);
    assert_eq!(check["valid"], true, "{check}");
}

#[tokio::test]
async fn verify_checks_the_chain() {
    let h = Harness::new();
    h.created("/v1/groups", json!({"name": "g"})).await;
    let check = h.get("/v1/audit/verify").await.ok(200);
    assert_eq!(check, json!({"valid": true, "events": 4, "broken": null}));
}

#[tokio::test]
async fn verify_says_where_a_tampered_chain_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::create_with_admin(dir.path(), "lk", StoreConfig::default()).unwrap();
    drop(store);
    // Event 2 replaced by a copy of event 3: well-formed, but it does not fit the chain.
    crate::tamper::copy_audit_event(dir.path(), 3, 2);
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let app = latchkey_admin::operator_router(store);
    let check = send(&app, "GET", "/v1/audit/verify", None, None, None)
        .await
        .ok(200);
    assert_eq!(check["valid"], false);
    assert_eq!(check["broken"]["seq"], 2);
    assert!(
        check["broken"]["reason"].as_str().unwrap().len() > 3,
        "{check}"
    );
}
