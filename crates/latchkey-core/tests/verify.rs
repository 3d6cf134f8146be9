//! The verify cache through the store's public API: a key text verified before is
//! recognised by its tag (`Store::verify_known`), only a caller holding a key's secret makes
//! it hot, and every write is seen by the next verification, tag or not.

mod support;

use std::sync::Arc;

use latchkey_core::*;
use time::Duration;
use time::macros::datetime;

struct Fixture {
    _dir: support::TestLocation,
    store: Store,
    clock: Arc<ManualClock>,
    admin: Actor,
    user: User,
}

fn fixture(cache_entries: usize) -> Fixture {
    let (dir, store, clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| {
        c.verify_cache_entries(cache_entries)
    });
    let admin = Actor::system();
    let user = support::user(&store, "bot", &["orders:read"]);
    Fixture {
        _dir: dir,
        store,
        clock,
        admin,
        user,
    }
}

impl Fixture {
    fn key(&self, name: &str) -> CreatedKey {
        self.key_with(NewKey {
            name: name.into(),
            user_id: self.user.id,
            ..NewKey::default()
        })
    }

    fn key_with(&self, new: NewKey) -> CreatedKey {
        self.store.create_key(&self.admin, new).unwrap()
    }

    fn set_key_enabled(&self, id: uuid::Uuid, enabled: bool) {
        let patch = KeyPatch {
            enabled: Some(enabled),
            ..KeyPatch::default()
        };
        self.store.update_key(&self.admin, id, patch).unwrap();
    }

    fn set_user_enabled(&self, enabled: bool) {
        let patch = UserPatch {
            enabled: Some(enabled),
            ..UserPatch::default()
        };
        self.store
            .update_user(&self.admin, self.user.id, patch)
            .unwrap();
    }

    /// Whether the text is answered from the hot cache by its tag.
    fn recognised(&self, text: &str) -> bool {
        self.store.verify_known(text.as_bytes()).is_some()
    }

    #[track_caller]
    fn code(&self, text: &str) -> &'static str {
        match self.store.verify(text) {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }
}

/// The key's text with another well-formed secret, re-checksummed.
fn with_secret(key: &ApiKey, secret: &str) -> String {
    let body = format!("{}_{}_{}_{}", key.prefix(), key.env(), key.id(), secret);
    let sum = key::checksum(body.as_bytes());
    format!("{body}{}", std::str::from_utf8(&sum).unwrap())
}

#[test]
fn a_key_verified_once_is_recognised_by_its_tag() {
    let f = fixture(1_000);
    let key = f.key("k");
    let text = key.secret.expose();
    assert!(!f.recognised(text), "nothing is hot before a verification");
    assert_eq!(f.code(text), "ok");
    let principal = f.store.verify_known(text.as_bytes()).unwrap();
    assert_eq!(principal.key_id, key.key.id);
    assert!(principal.has("orders:read"));
    // Usage is counted on the fast path too.
    f.store.flush().unwrap();
    assert_eq!(f.store.key(key.key.id).unwrap().usage_count, 2);
}

#[test]
fn a_wrong_secret_with_a_cached_id_misses() {
    let f = fixture(1_000);
    let key = f.key("k");
    let text = key.secret.expose();
    assert_eq!(f.code(text), "ok");
    let wrong = with_secret(&key.secret, &"A".repeat(key::SECRET_LEN));
    assert!(!f.recognised(&wrong));
    assert_eq!(f.store.verify(&wrong).unwrap_err(), VerifyError::Invalid);
    // The same text with one checksum digit changed: not recognised, and malformed.
    let mut typo = text.to_owned();
    let last = typo.pop().unwrap();
    typo.push(if last == '0' { '1' } else { '0' });
    assert!(!f.recognised(&typo));
    assert!(matches!(
        f.store.verify(&typo),
        Err(VerifyError::Malformed(ParseError::Checksum))
    ));
    // The same id and secret under the other environment.
    let test = text.replacen("_live_", "_test_", 1);
    let body = &test[..test.len() - key::CHECKSUM_LEN];
    let test = format!(
        "{body}{}",
        std::str::from_utf8(&key::checksum(body.as_bytes())).unwrap()
    );
    assert!(!f.recognised(&test));
    assert_eq!(f.store.verify(&test).unwrap_err(), VerifyError::Invalid);
    // The real key is still hot.
    assert!(f.recognised(text));
}

#[test]
fn unauthenticated_traffic_never_evicts_a_hot_key() {
    let f = fixture(64);
    let hot: Vec<CreatedKey> = (0..4).map(|i| f.key(&format!("hot-{i}"))).collect();
    // Keys that exist but are only ever presented with a wrong secret.
    let probed: Vec<CreatedKey> = (0..30).map(|i| f.key(&format!("probed-{i}"))).collect();
    for key in &hot {
        // Once each: a single use is what a cache evicts first.
        assert_eq!(f.code(key.secret.expose()), "ok");
    }
    // Far more unknown ids and wrong secrets than the whole cache holds, twice over.
    for round in 0..2 {
        for _ in 0..500 {
            let unknown = ApiKey::generate(&Prefix::default(), Env::Live);
            assert_eq!(f.code(unknown.expose()), "invalid_key");
        }
        for key in &probed {
            let wrong = with_secret(&key.secret, &format!("{round}").repeat(key::SECRET_LEN));
            assert_eq!(f.code(&wrong), "invalid_key");
        }
        assert_eq!(f.code("lk_live_malformed"), "invalid_key");
    }
    for key in &hot {
        assert!(
            f.recognised(key.secret.expose()),
            "{} was evicted",
            key.key.name
        );
    }
    // A key first probed with a wrong secret still authenticates with its own.
    assert_eq!(f.code(probed[0].secret.expose()), "ok");
    assert!(f.recognised(probed[0].secret.expose()));
}

#[test]
fn an_unknown_id_and_a_wrong_secret_answer_alike_when_cached() {
    let f = fixture(1_000);
    let key = f.key("k");
    f.store.revoke_key(&f.admin, key.key.id).unwrap();
    let wrong = with_secret(&key.secret, &"B".repeat(key::SECRET_LEN));
    let unknown = ApiKey::generate(&Prefix::default(), Env::Live);
    // The first time from the store, then from the cold cache: always the same answer,
    // and the revoked status is never told to a caller without the secret.
    for _ in 0..3 {
        assert_eq!(f.store.verify(&wrong).unwrap_err(), VerifyError::Invalid);
        assert_eq!(
            f.store.verify(unknown.expose()).unwrap_err(),
            VerifyError::Invalid
        );
    }
    assert_eq!(f.code(key.secret.expose()), "key_revoked");
}

#[test]
fn every_write_is_seen_by_the_next_verification_though_cached_by_tag() {
    let f = fixture(1_000);
    let key = f.key("k");
    let text = key.secret.expose();
    let id = key.key.id;
    assert_eq!(f.code(text), "ok");
    assert!(f.recognised(text));

    f.set_key_enabled(id, false);
    assert!(!f.recognised(text));
    assert_eq!(f.code(text), "key_disabled");
    f.set_key_enabled(id, true);
    assert_eq!(f.code(text), "ok");
    assert!(f.recognised(text));

    // A user change invalidates every key.
    f.set_user_enabled(false);
    assert!(!f.recognised(text));
    assert_eq!(f.code(text), "user_disabled");
    f.set_user_enabled(true);
    assert_eq!(f.code(text), "ok");

    f.store.revoke_key(&f.admin, id).unwrap();
    assert!(!f.recognised(text));
    assert_eq!(f.code(text), "key_revoked");
    assert_eq!(f.code(text), "key_revoked");
}

#[test]
fn expiry_is_checked_on_the_fast_path() {
    let f = fixture(1_000);
    let key = f.key_with(NewKey {
        name: "short".into(),
        user_id: f.user.id,
        expires_at: Some(f.clock.now() + Duration::hours(1)),
        ..NewKey::default()
    });
    let text = key.secret.expose();
    assert_eq!(f.code(text), "ok");
    assert!(f.recognised(text));
    f.clock.advance(Duration::hours(1));
    assert!(!f.recognised(text));
    assert_eq!(f.code(text), "key_expired");
}

#[test]
fn without_a_cache_nothing_is_recognised_and_everything_verifies() {
    let f = fixture(0);
    let key = f.key("k");
    let text = key.secret.expose();
    for _ in 0..2 {
        assert_eq!(f.code(text), "ok");
        assert!(!f.recognised(text));
    }
    f.store.revoke_key(&f.admin, key.key.id).unwrap();
    assert_eq!(f.code(text), "key_revoked");
}

#[test]
fn the_cached_answer_needs_no_read_and_a_miss_says_so() {
    let f = fixture(1_000);
    let key = f.key("k");
    let parsed = ApiKey::parse(key.secret.expose()).unwrap();
    assert!(
        f.store.verify_key_cached(&parsed).is_none(),
        "not cached yet"
    );
    assert_eq!(f.code(key.secret.expose()), "ok");
    let cached = f.store.verify_key_cached(&parsed).expect("cached now");
    assert_eq!(cached.unwrap().key_id, key.key.id);
    f.store.revoke_key(&f.admin, key.key.id).unwrap();
    assert!(
        f.store.verify_key_cached(&parsed).is_none(),
        "the write dropped it"
    );
    assert_eq!(
        f.store.verify_key(&parsed).unwrap_err(),
        VerifyError::Revoked
    );
    assert_eq!(f.store.reads_over_network(), support::on_postgres());
}

/// When several statuses refuse a key, the answer is the first in the contract's order: key
/// enabled, not revoked, not expired, user enabled.
#[test]
fn statuses_are_checked_in_the_contract_s_order() {
    for disabled in [false, true] {
        for revoked in [false, true] {
            for expired in [false, true] {
                for user_disabled in [false, true] {
                    let f = fixture(1_000);
                    let key = f.key_with(NewKey {
                        name: "k".into(),
                        user_id: f.user.id,
                        expires_at: Some(f.clock.now() + Duration::hours(1)),
                        ..NewKey::default()
                    });
                    let text = key.secret.expose();
                    if disabled {
                        f.set_key_enabled(key.key.id, false);
                    }
                    if revoked {
                        f.store.revoke_key(&f.admin, key.key.id).unwrap();
                    }
                    if expired {
                        f.clock.advance(Duration::hours(1));
                    }
                    if user_disabled {
                        f.set_user_enabled(false);
                    }
                    let expected = [
                        (disabled, "key_disabled"),
                        (revoked, "key_revoked"),
                        (expired, "key_expired"),
                        (user_disabled, "user_disabled"),
                    ]
                    .into_iter()
                    .find_map(|(refused, code)| refused.then_some(code))
                    .unwrap_or("ok");
                    assert_eq!(
                        f.code(text),
                        expected,
                        "disabled {disabled}, revoked {revoked}, expired {expired}, user disabled {user_disabled}"
                    );
                }
            }
        }
    }
}
