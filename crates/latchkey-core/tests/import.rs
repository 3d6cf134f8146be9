//! Imported keys: full texts and SHA-256 digests, in bulk; they verify under their old
//! text, a SHA-256 one is re-hashed at its first verification, bad items are refused alone.

/// Opens a just-closed store's files directly.
#[path = "support/tamper.rs"]
mod tamper;

mod support;

use latchkey_core::{
    Actor, ImportKey, ImportSecret, NewUser, PermissionSet, Store, StoreError, VerifyError,
};
use sha2::{Digest, Sha256};

fn item(secret: ImportSecret, prefix: Option<&str>) -> ImportKey {
    ImportKey {
        secret,
        prefix: prefix.map(str::to_owned),
        name: None,
        expires_at: None,
        scopes: None,
        meta: None,
    }
}

/// Asserts each of `outcome` is a refusal of the item's `prefix`, saying `why`.
#[track_caller]
fn refused_for_prefix<T: std::fmt::Debug>(outcome: &[Result<T, StoreError>], why: &str) {
    for refused in outcome {
        assert!(
            matches!(refused, Err(StoreError::Invalid { field, reason }) if *field == "prefix" && reason.contains(why)),
            "{refused:?}"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A store on the tests' backend, with a user `legacy` without permissions; the location
/// must live as long as the store (a PostgreSQL database is dropped with it).
fn store_with_user() -> (support::TestLocation, Store, uuid::Uuid) {
    let location = support::location();
    let store = Store::create_empty_at(&location.location, "lk", support::config()).unwrap();
    let user = legacy_user(&store);
    (location, store, user)
}

/// Makes the user `legacy`, without permissions; its id.
fn legacy_user(store: &Store) -> uuid::Uuid {
    let new_user = NewUser {
        name: "legacy".into(),
        ..NewUser::default()
    };
    store.create_user(&Actor::system(), new_user).unwrap().id
}

#[test]
fn imported_keys_verify_under_their_old_text_and_are_rehashed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::create_empty(&path, "lk", support::config()).unwrap();
    let admin = Actor::system();
    let new_user = NewUser {
        name: "legacy".into(),
        permissions: PermissionSet::parse(["orders:read"]).unwrap(),
        ..NewUser::default()
    };
    let user = store.create_user(&admin, new_user).unwrap().id;
    // A malformed text is refused as before while the store holds no imported key.
    assert!(store.verify_imported("sk_live_0000000000000000").is_none());

    let full: Vec<String> = (0..2_000).map(|i| format!("sk_live_{i:024}")).collect();
    let hashed: Vec<String> = (0..2_000).map(|i| format!("unkey_{i:030}")).collect();
    let mut items: Vec<ImportKey> = full
        .iter()
        .map(|k| item(ImportSecret::full(k).unwrap(), None))
        .collect();
    items.extend(hashed.iter().map(|k| {
        let digest = hex(&Sha256::digest(k.as_bytes()));
        item(ImportSecret::sha256(&digest).unwrap(), Some("unkey"))
    }));
    for chunk in items.chunks(1_000) {
        let outcome = store.import_keys(&admin, user, chunk).unwrap();
        assert!(outcome.iter().all(Result::is_ok));
    }
    // Importing one again is refused alone; the others of its batch go in.
    let again = [
        item(ImportSecret::full(&full[0]).unwrap(), None),
        item(
            ImportSecret::full("sk_live_fresh_0000000000").unwrap(),
            None,
        ),
    ];
    let outcome = store.import_keys(&admin, user, &again).unwrap();
    assert!(
        matches!(outcome[0], Err(StoreError::Conflict(_))),
        "{:?}",
        outcome[0]
    );
    assert!(outcome[1].is_ok());

    for key in &full {
        let principal = store.verify(key).unwrap();
        assert!(principal.has("orders:read"));
        assert_eq!(principal.prefix, "sk_live");
    }
    for key in &hashed {
        assert_eq!(store.verify(key).unwrap().prefix, "unkey");
    }
    assert_eq!(
        store
            .verify("sk_live_000000000000000000000099x")
            .unwrap_err(),
        VerifyError::Invalid
    );

    // After a restart, the SHA-256 ones are found by their keyed BLAKE3 alone: a store
    // whose SHA-256 entries were re-hashed holds none of them any more.
    drop(store);
    let store = Store::open(&path, support::config()).unwrap();
    for key in hashed.iter().chain(&full) {
        assert!(store.verify(key).is_ok());
    }
    drop(store);
    {
        let raw = tamper::Raw::open(&path);
        assert_eq!(
            raw.keys_with_prefix(b"xs:").len(),
            0,
            "every SHA-256 was replaced"
        );
        assert_eq!(
            raw.keys_with_prefix(b"xb:").len(),
            full.len() + hashed.len() + 1
        );
    }
    let store = Store::open(&path, support::config()).unwrap();
    // A revoked imported key stops at once, as any key.
    let principal = store.verify(&full[1]).unwrap();
    store.revoke_key(&admin, principal.key_id).unwrap();
    assert_eq!(store.verify(&full[1]).unwrap_err(), VerifyError::Revoked);
}

/// A display prefix given with a full key is stored and shown in plain: one that would
/// show the key (the start of its text with fewer than 16 characters after it, or any
/// other text holding 8 of its characters in a row past its kind, in any case: the key but
/// its first character passed, import hunt H1) is refused, and nothing of the item is
/// stored. Runs on the tests' backend (PostgreSQL with `LATCHKEY_TEST_POSTGRES`).
#[test]
fn a_display_prefix_that_would_show_the_key_is_refused() {
    let (_location, store, user) = store_with_user();
    let text = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let full = |prefix: &str| item(ImportSecret::Full(text.into()), Some(prefix));
    let upper = text.to_uppercase();
    let items = [
        full(text),
        full("sk_live_4eC39HqLyjWD"),
        full(&text[1..]),
        full(&upper),
        full("sk_live_4eC39Hq"),
        full("sk_live"),
    ];
    let outcome = store.import_keys(&Actor::system(), user, &items).unwrap();
    refused_for_prefix(&outcome[..4], "would show the key");
    // 17 characters after it: shown as given; then the same text is imported once only.
    assert_eq!(outcome[4].as_ref().unwrap().prefix, "sk_live_4eC39Hq");
    assert!(outcome[5].is_err(), "imported once");
    let listed = store.list_keys(&Default::default()).unwrap().items;
    assert_eq!(listed.len(), 1);
    assert!(
        listed.iter().all(|k| !k.prefix.contains("yjWD")),
        "{listed:?}"
    );
}

/// An imported key never passes for one of this store's own: a given display prefix in
/// their form (`lk_live_…`, `lk_test_…`) is refused, with a full text or a digest alike.
#[test]
fn a_display_prefix_in_this_store_s_own_form_is_refused() {
    let (_location, store, user) = store_with_user();
    let native = "lk_live_AbCdEf123456";
    let digest: [u8; 32] = Sha256::digest(b"some legacy key text").into();
    let items = [
        item(
            ImportSecret::Full("legacy_0123456789abcdefghij".into()),
            Some(native),
        ),
        item(ImportSecret::Sha256(digest), Some("lk_test_AbCdEf123456")),
        item(ImportSecret::Sha256(digest), Some("lk_legacy")),
    ];
    let outcome = store.import_keys(&Actor::system(), user, &items).unwrap();
    refused_for_prefix(&outcome[..2], "this store's own");
    assert_eq!(outcome[2].as_ref().unwrap().prefix, "lk_legacy");
    assert_eq!(store.list_keys(&Default::default()).unwrap().items.len(), 1);
}

/// A name or `meta` that holds an imported key's text, or, beside a SHA-256, a prefix
/// whose SHA-256 is the item's, is refused: each is stored and shown in plain, and handed
/// to apps (import hunt M1: all three were taken, and the keys verified).
#[test]
fn a_name_meta_or_prefix_holding_the_key_is_refused() {
    use serde_json::json;
    let (_location, store, user) = store_with_user();
    let text = "sk_live_AAAAbbbbCCCCdddd1111XYZ";
    let full = || item(ImportSecret::Full(text.into()), None);
    let digest: [u8; 32] = Sha256::digest(b"tokenTOKENtoken1234567890").into();
    let items = [
        ImportKey {
            name: Some(text.into()),
            ..full()
        },
        ImportKey {
            meta: Some(json!({"k": text})),
            ..full()
        },
        item(
            ImportSecret::Sha256(digest),
            Some("tokenTOKENtoken1234567890"),
        ),
    ];
    let outcome = store.import_keys(&Actor::system(), user, &items).unwrap();
    let fields: Vec<_> = outcome
        .iter()
        .map(|o| match o {
            Err(StoreError::Invalid { field, .. }) => *field,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(fields, ["name", "meta", "prefix"]);
    assert!(
        store
            .list_keys(&Default::default())
            .unwrap()
            .items
            .is_empty()
    );
}

/// An imported key carries `meta` as a key created here does: checked the same way, shown
/// on the record and handed to the app at verification (a SHA-256 one after its re-hash
/// too). Runs on the tests' backend (PostgreSQL with `LATCHKEY_TEST_POSTGRES`).
#[test]
fn an_imported_key_carries_meta_checked_as_a_created_key_s() {
    use latchkey_core::limits::MAX_META_BYTES;
    use serde_json::json;

    let (_location, store, user) = store_with_user();
    let admin = Actor::system();
    let full = "sk_live_0123456789abcdefmeta";
    let hashed = "unkey_0123456789abcdefmeta";
    let with_meta = |secret, prefix, meta| ImportKey {
        meta: Some(meta),
        ..item(secret, prefix)
    };
    let digest = hex(&Sha256::digest(hashed.as_bytes()));
    let items = [
        with_meta(
            ImportSecret::full(full).unwrap(),
            None,
            json!({"plan": "pro"}),
        ),
        with_meta(
            ImportSecret::sha256(&digest).unwrap(),
            Some("unkey"),
            json!({"tier": 2}),
        ),
        with_meta(
            ImportSecret::full("sk_live_0123456789abcdeflist").unwrap(),
            None,
            json!(["not", "an", "object"]),
        ),
        with_meta(
            ImportSecret::full("sk_live_0123456789abcdefhuge").unwrap(),
            None,
            json!({"a": "x".repeat(MAX_META_BYTES)}),
        ),
    ];
    let outcome = store.import_keys(&admin, user, &items).unwrap();
    let imported = outcome[0].as_ref().unwrap();
    assert_eq!(imported.meta, Some(json!({"plan": "pro"})));
    assert_eq!(store.key(imported.id).unwrap().meta, imported.meta);
    for refused in &outcome[2..] {
        assert!(
            matches!(refused, Err(StoreError::Invalid { field, .. }) if *field == "meta"),
            "{refused:?}"
        );
    }
    assert_eq!(
        store.verify(full).unwrap().meta,
        Some(json!({"plan": "pro"}))
    );
    for _ in 0..2 {
        // The first verification re-hashes it; the second finds it under its keyed hash.
        assert_eq!(store.verify(hashed).unwrap().meta, Some(json!({"tier": 2})));
    }
    let keys = store.list_keys(&Default::default()).unwrap().items;
    assert_eq!(keys.len(), 2, "the refused items left nothing");
}

#[test]
fn an_imported_key_is_never_stronger_than_its_importer_and_its_scopes_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create_empty(dir.path().join("s"), "lk", support::config()).unwrap();
    let new_user = NewUser {
        name: "bot".into(),
        permissions: PermissionSet::parse(["orders:read"]).unwrap(),
        ..NewUser::default()
    };
    let bot = store.create_user(&Actor::system(), new_user).unwrap().id;
    let importer = Actor::new(
        None,
        PermissionSet::parse(["latchkey:keys:write", "orders:read"]).unwrap(),
    );
    let unscoped = item(
        ImportSecret::full("partner_0123456789abcdef0123").unwrap(),
        None,
    );
    let mut wide = item(
        ImportSecret::full("partner_fedcba9876543210fedc").unwrap(),
        None,
    );
    wide.scopes = Some(PermissionSet::parse((0..300).map(|i| format!("orders:p{i}"))).unwrap());
    let outcome = store
        .import_keys(&importer, bot, &[unscoped, wide])
        .unwrap();
    // Capped at what the importer held, as a key minted here would be: the user gaining a
    // permission later does not reach the key.
    let key = outcome[0].as_ref().unwrap();
    assert_eq!(
        key.scopes,
        Some(PermissionSet::parse(["latchkey:keys:write", "orders:read"]).unwrap())
    );
    assert!(
        matches!(&outcome[1], Err(StoreError::Invalid { field, .. }) if *field == "scopes"),
        "{:?}",
        outcome[1]
    );
}

/// A deleted imported key takes its text's entry with it: the same text imports again, in
/// both forms, and verifies as the new key.
#[test]
fn a_deleted_imported_key_can_be_imported_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create_empty(dir.path().join("s"), "lk", support::config()).unwrap();
    let admin = Actor::system();
    let user = legacy_user(&store);
    let full = "sk_live_000000000000000000000001";
    let hashed = "unkey_000000000000000000000000000001";
    let digest = hex(&Sha256::digest(hashed.as_bytes()));
    let items = || {
        [
            item(ImportSecret::full(full).unwrap(), None),
            item(ImportSecret::sha256(&digest).unwrap(), Some("unkey")),
        ]
    };
    // The SHA-256 one is deleted before and after its re-hash at its first verification.
    for verify_first in [false, true] {
        let ids: Vec<uuid::Uuid> = store
            .import_keys(&admin, user, &items())
            .unwrap()
            .into_iter()
            .map(|outcome| outcome.unwrap().id)
            .collect();
        if verify_first {
            store.verify(hashed).unwrap();
        }
        for id in ids {
            store.revoke_key(&admin, id).unwrap();
            store.delete_key(&admin, id).unwrap();
        }
        assert!(store.verify(full).is_err());
    }
    let again = store.import_keys(&admin, user, &items()).unwrap();
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    store.verify(full).unwrap();
    store.verify(hashed).unwrap();
}

/// An older build deletes an imported key without the entries that keep its text from
/// being imported twice, which it does not know (`xh:`, `kx:`): left behind, they named a
/// key that no longer exists and refused the text for ever (upgrade hunt L3). An entry that
/// names no key is taken for what it is, and goes.
#[test]
fn an_entry_left_by_an_older_builds_deletion_refuses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::create_empty(&path, "lk", support::config()).unwrap();
    let admin = Actor::system();
    let user = legacy_user(&store);
    let full = "sk_live_000000000000000000000007";
    let items = || [item(ImportSecret::full(full).unwrap(), None)];
    let id = store.import_keys(&admin, user, &items()).unwrap()[0]
        .as_ref()
        .unwrap()
        .id;
    drop(store);
    let left: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
        let raw = tamper::Raw::open(&path);
        [&b"xh:"[..], b"kx:"]
            .iter()
            .flat_map(|prefix| raw.keys_with_prefix(prefix))
            .map(|key| {
                let value = raw.get(&key);
                (key, value)
            })
            .collect()
    };
    assert_eq!(left.len(), 2, "one entry of each kind");
    let store = Store::open(&path, support::config()).unwrap();
    store.revoke_key(&admin, id).unwrap();
    store.delete_key(&admin, id).unwrap();
    drop(store);
    tamper::Raw::open(&path).apply(left);
    let store = Store::open(&path, support::config()).unwrap();
    let again = store.import_keys(&admin, user, &items()).unwrap();
    assert!(again[0].is_ok(), "{again:?}");
    assert_eq!(
        store.verify(full).unwrap().key_id,
        again[0].as_ref().unwrap().id
    );
    // Imported again, the text is one key again.
    let twice = store.import_keys(&admin, user, &items()).unwrap();
    assert!(twice[0].is_err(), "{twice:?}");
}

/// One text is one key, however it comes: as a full key, as its SHA-256, or as its SHA-256
/// again once the first was re-hashed at its first verification (the SHA-256 entry is gone
/// then). Otherwise the text would still authenticate, through the other key, once the
/// first is revoked and deleted. Runs on the tests' backend.
#[test]
fn one_text_is_imported_once_in_any_form() {
    let (_location, store, user) = store_with_user();
    let admin = Actor::system();
    let full = |text: &str| item(ImportSecret::full(text).unwrap(), None);
    let sha = |text: &str| {
        let digest = hex(&Sha256::digest(text.as_bytes()));
        item(ImportSecret::sha256(&digest).unwrap(), Some("sk_live"))
    };
    let refused = |items: &[ImportKey]| {
        let outcome = store.import_keys(&admin, user, items).unwrap();
        assert!(
            matches!(outcome[..], [Err(StoreError::Conflict(_))]),
            "{outcome:?}"
        );
    };
    let imported = |items: &[ImportKey]| {
        let outcome = store.import_keys(&admin, user, items).unwrap();
        outcome.into_iter().next().unwrap().unwrap().id
    };

    // A: a full key, then its SHA-256; and a SHA-256, then its full key.
    let a = "sk_live_AAAAAAAAAAAAAAAAAAAAAAAA";
    imported(&[full(a)]);
    refused(&[sha(a)]);
    let b = "sk_live_BBBBBBBBBBBBBBBBBBBBBBBB";
    imported(&[sha(b)]);
    refused(&[full(b)]);
    // B: a SHA-256, verified once (re-hashed), then the same SHA-256 or its full key.
    let c = "sk_live_CCCCCCCCCCCCCCCCCCCCCCCC";
    let first = imported(&[sha(c)]);
    store.verify(c).unwrap();
    refused(&[sha(c)]);
    refused(&[full(c)]);
    // Deleting the key frees its text, in both forms.
    store.revoke_key(&admin, first).unwrap();
    store.delete_key(&admin, first).unwrap();
    assert!(store.verify(c).is_err());
    let again = imported(&[sha(c)]);
    assert_eq!(store.verify(c).unwrap().key_id, again);
}
