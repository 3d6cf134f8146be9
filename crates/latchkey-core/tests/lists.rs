//! Lists and counts over the indexes: after any sequence of writes, every query's pages
//! concatenate to exactly what a full scan of the keys would answer, and the counts behind
//! `/metrics` equal a full count; pages read while other threads write list every key that
//! exists throughout exactly once.

mod support;
/// Opens a just-closed store's sled files directly (sled only).
#[path = "support/tamper.rs"]
mod tamper;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use latchkey_core::*;
use proptest::prelude::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

/// One write of the random sequence.
#[derive(Debug, Clone)]
enum Op {
    CreateKey {
        user: usize,
        name: usize,
        expires_in: Option<i64>,
    },
    Revoke(usize),
    Disable(usize),
    Enable(usize),
    Delete(usize),
    Rename(usize, usize),
    Rotate(usize, i64),
    Use(usize, u64),
    Flush,
    Advance(i64),
    CreateUser,
    DeleteUser(usize),
    /// User `.0` moved to tenant `TENANTS[.1]` (each taken modulo the list's length).
    MoveUser(usize, usize),
    CreateGroup,
    DeleteGroup(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize, 0..6usize, proptest::option::of(1..6i64))
            .prop_map(|(user, name, expires_in)| Op::CreateKey { user, name, expires_in }),
        2 => any::<usize>().prop_map(Op::Revoke),
        2 => any::<usize>().prop_map(Op::Disable),
        1 => any::<usize>().prop_map(Op::Enable),
        1 => any::<usize>().prop_map(Op::Delete),
        1 => (any::<usize>(), 0..6usize).prop_map(|(k, n)| Op::Rename(k, n)),
        1 => (any::<usize>(), 0..3i64).prop_map(|(k, g)| Op::Rotate(k, g)),
        2 => (any::<usize>(), 1..5u64).prop_map(|(k, n)| Op::Use(k, n)),
        1 => Just(Op::Flush),
        2 => (1..4i64).prop_map(Op::Advance),
        1 => Just(Op::CreateUser),
        1 => any::<usize>().prop_map(Op::DeleteUser),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(u, t)| Op::MoveUser(u, t)),
        1 => Just(Op::CreateGroup),
        1 => any::<usize>().prop_map(Op::DeleteGroup),
    ]
}

const NAMES: [&str; 6] = ["alpha", "Bravo", "charlie k1", "alpha", "delta", "écho"];
/// The tenants users are created in, in turn, and moved to.
const TENANTS: [Option<&str>; 3] = [Some("t-a"), Some("t-b"), None];

struct World {
    _dir: support::TestLocation,
    store: Store,
    clock: Arc<ManualClock>,
    admin: Actor,
    keys: Vec<Uuid>,
    users: Vec<Uuid>,
    groups: Vec<Uuid>,
    next_name: usize,
}

impl World {
    fn new() -> World {
        let (dir, store, clock) =
            support::clocked_store(T0, |c| c.index_chunk_positions(2).background_jobs(false));
        let mut world = World {
            _dir: dir,
            store,
            clock,
            admin: Actor::system(),
            keys: Vec::new(),
            users: Vec::new(),
            groups: Vec::new(),
            next_name: 0,
        };
        for _ in 0..3 {
            world.apply(&Op::CreateUser);
        }
        world
    }

    fn pick<T: Copy>(items: &[T], i: usize) -> Option<T> {
        (!items.is_empty()).then(|| items[i % items.len()])
    }

    fn fresh_name(&mut self, prefix: &str) -> String {
        self.next_name += 1;
        format!("{prefix}-{}", self.next_name)
    }

    /// Applies an operation; refusals (a revoked key re-enabled, …) are fine and change
    /// nothing.
    fn apply(&mut self, op: &Op) {
        let store = self.store.clone();
        let admin = &self.admin.clone();
        let key = |i: usize| Self::pick(&self.keys, i);
        match *op {
            Op::CreateKey {
                user,
                name,
                expires_in,
            } => {
                let Some(user_id) = Self::pick(&self.users, user) else {
                    return;
                };
                let new = NewKey {
                    name: NAMES[name].into(),
                    user_id,
                    description: Some(format!("described {name}")),
                    expires_at: expires_in.map(|s| self.clock.now() + Duration::seconds(s)),
                    ..NewKey::default()
                };
                let created = store.create_key(admin, new).unwrap();
                self.keys.push(created.key.id);
            }
            Op::Revoke(i) => {
                if let Some(id) = key(i) {
                    store.revoke_key(admin, id).unwrap();
                }
            }
            Op::Disable(i) | Op::Enable(i) => {
                if let Some(id) = key(i) {
                    let patch = KeyPatch {
                        enabled: Some(matches!(op, Op::Enable(_))),
                        ..KeyPatch::default()
                    };
                    let _ = store.update_key(admin, id, patch);
                }
            }
            Op::Delete(i) => {
                if let Some(id) = key(i) {
                    store.revoke_key(admin, id).unwrap();
                    store.delete_key(admin, id).unwrap();
                    self.keys.retain(|k| *k != id);
                }
            }
            Op::Rename(i, name) => {
                if let Some(id) = key(i) {
                    let patch = KeyPatch {
                        name: Some(NAMES[name].into()),
                        ..KeyPatch::default()
                    };
                    store.update_key(admin, id, patch).unwrap();
                }
            }
            Op::Rotate(i, grace) => {
                if let Some(id) = key(i)
                    && let Ok(created) = store.rotate_key(admin, id, Duration::seconds(grace))
                {
                    self.keys.push(created.key.id);
                }
            }
            Op::Use(i, n) => {
                if let Some(id) = key(i) {
                    store.record_usage(id, n, self.clock.now());
                }
            }
            Op::Flush => store.flush().unwrap(),
            Op::Advance(s) => self.clock.advance(Duration::seconds(s)),
            Op::CreateUser => {
                let name = self.fresh_name("user");
                let new = NewUser {
                    name,
                    tenant_id: TENANTS[self.next_name % TENANTS.len()].map(Into::into),
                    ..NewUser::default()
                };
                self.users.push(store.create_user(admin, new).unwrap().id);
            }
            Op::DeleteUser(i) => {
                if let Some(id) = Self::pick(&self.users, i) {
                    store.delete_user(admin, id).unwrap();
                    self.users.retain(|u| *u != id);
                }
            }
            Op::MoveUser(i, tenant) => {
                if let Some(id) = Self::pick(&self.users, i) {
                    let patch = UserPatch {
                        tenant_id: Some(TENANTS[tenant % TENANTS.len()].map(Into::into)),
                        ..UserPatch::default()
                    };
                    store.update_user(admin, id, patch).unwrap();
                }
            }
            Op::CreateGroup => {
                let name = self.fresh_name("group");
                let new = NewGroup {
                    name,
                    permissions: PermissionSet::new(),
                };
                self.groups.push(store.create_group(admin, new).unwrap().id);
            }
            Op::DeleteGroup(i) => {
                if let Some(id) = Self::pick(&self.groups, i) {
                    store.delete_group(admin, id).unwrap();
                    self.groups.retain(|g| *g != id);
                }
            }
        }
        self.clock.advance(Duration::milliseconds(7));
    }

    /// Every key, read one by one: the reference the lists are compared with.
    fn all_keys(&self) -> Vec<Key> {
        self.keys
            .iter()
            .map(|id| self.store.key(*id).unwrap())
            .collect()
    }

    /// Every page of a query, as `actor` lists it, concatenated.
    fn pages(&self, actor: &Actor, query: KeyQuery) -> Vec<Uuid> {
        let mut seen = Vec::new();
        let mut cursor = None;
        for _ in 0..1_000 {
            let page = self
                .store
                .list_keys_as(
                    actor,
                    &KeyQuery {
                        cursor: cursor.take(),
                        ..query.clone()
                    },
                )
                .unwrap();
            assert!(page.items.len() <= query.limit);
            seen.extend(page.items.iter().map(|k| k.id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return seen,
            }
        }
        panic!("more than 1,000 pages");
    }

    fn check_lists(&self) {
        // Persisted usage is what `last_used_at` sorts by.
        self.store.flush().unwrap();
        let keys = self.all_keys();
        let mut user_filters: Vec<Option<Uuid>> = vec![None, Some(Uuid::now_v7())];
        user_filters.extend(self.users.iter().take(2).map(|u| Some(*u)));
        let statuses = [
            None,
            Some(KeyStatus::Active),
            Some(KeyStatus::Disabled),
            Some(KeyStatus::Revoked),
            Some(KeyStatus::Expired),
        ];
        for user_id in &user_filters {
            for status in statuses {
                for search in [None, Some("K1"), Some("lk_live_")] {
                    for sort in ["created_at", "-created_at", "name", "-name"]
                        .into_iter()
                        .chain(["last_used_at", "-last_used_at"])
                    {
                        let sort: KeySort = sort.parse().unwrap();
                        let query = KeyQuery {
                            user_id: *user_id,
                            status,
                            env: None,
                            search: search.map(str::to_owned),
                            sort,
                            limit: 3,
                            cursor: None,
                        };
                        let expected = expected(&keys, &query);
                        assert_eq!(
                            self.pages(&self.admin, query.clone()),
                            expected,
                            "{query:?}"
                        );
                    }
                }
            }
        }
        // A tenant-bound caller lists the keys of its tenant's users, as the records say
        // who they are now.
        let users = self.store.users().unwrap();
        for tenant in TENANTS.into_iter().flatten() {
            let members: Vec<Uuid> = users
                .iter()
                .filter(|u| u.tenant_id.as_deref() == Some(tenant))
                .map(|u| u.id)
                .collect();
            let theirs: Vec<Key> = keys
                .iter()
                .filter(|k| members.contains(&k.user_id))
                .cloned()
                .collect();
            let bound =
                Actor::new(None, PermissionSet::new()).with_tenant(Some(tenant.into()), None);
            // Its users, a page of one at a time: each page full, in id order.
            let mut pages: Vec<Vec<Uuid>> = Vec::new();
            let mut cursor = None;
            loop {
                let page = self
                    .store
                    .users_page_as(&bound, 1, cursor.as_deref())
                    .unwrap();
                pages.push(page.items.iter().map(|u| u.id).collect());
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(pages.concat(), members, "{tenant}'s users");
            assert_eq!(pages.len(), members.len().max(1), "{tenant}: {pages:?}");
            for status in [None, Some(KeyStatus::Active)] {
                for sort in ["created_at", "-name", "last_used_at"] {
                    let query = KeyQuery {
                        status,
                        sort: sort.parse().unwrap(),
                        limit: 2,
                        ..KeyQuery::default()
                    };
                    let expected = expected(&theirs, &query);
                    assert_eq!(
                        self.pages(&bound, query.clone()),
                        expected,
                        "{tenant}: {query:?}"
                    );
                }
            }
        }
    }

    fn check_counts(&self) {
        let stats = self.store.stats().unwrap();
        let mut counted: BTreeMap<&'static str, u64> = ["active", "disabled", "revoked", "expired"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
        for key in self.all_keys() {
            *counted.get_mut(key.status.as_str()).unwrap() += 1;
        }
        assert_eq!(stats.keys, counted);
        assert_eq!(stats.users, self.store.users().unwrap().len() as u64);
        assert_eq!(stats.groups, self.store.groups().unwrap().len() as u64);
    }
}

/// What a full scan answers: filter, then sort by the field and the id.
fn expected(keys: &[Key], query: &KeyQuery) -> Vec<Uuid> {
    let needle = query.search.as_deref().map(str::to_lowercase);
    let mut hits: Vec<&Key> = keys
        .iter()
        .filter(|k| query.user_id.is_none_or(|u| u == k.user_id))
        .filter(|k| query.status.is_none_or(|s| s == k.status))
        .filter(|k| {
            needle.as_deref().is_none_or(|n| {
                k.name.to_lowercase().contains(n)
                    || k.prefix.to_lowercase().contains(n)
                    || k.description
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(n))
            })
        })
        .collect();
    hits.sort_by(|a, b| {
        let order = match query.sort.field {
            SortField::CreatedAt => a.created_at.cmp(&b.created_at),
            SortField::Name => a.name.cmp(&b.name),
            SortField::LastUsedAt => a.last_used_at.cmp(&b.last_used_at),
        }
        .then(a.id.cmp(&b.id));
        if query.sort.descending {
            order.reverse()
        } else {
            order
        }
    });
    hits.into_iter().map(|k| k.id).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// After random writes, every list answers what a full scan answers, and the counts
    /// equal a full count.
    #[test]
    fn lists_and_counts_match_a_full_scan(ops in proptest::collection::vec(op(), 1..40)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
        }
        world.check_lists();
        world.check_counts();
    }
}

/// A world of a few keys in every class, its store closed and edited raw (sled), then
/// reopened: counts and lists must be right.
fn reopened_after(edit: impl FnOnce(&tamper::Raw)) {
    let mut world = World::new();
    for op in [
        Op::CreateKey {
            user: 0,
            name: 0,
            expires_in: Some(2),
        },
        Op::CreateKey {
            user: 1,
            name: 1,
            expires_in: None,
        },
        Op::CreateKey {
            user: 2,
            name: 2,
            expires_in: None,
        },
        Op::Revoke(1),
        Op::Disable(2),
        Op::CreateGroup,
        Op::Advance(3),
    ] {
        world.apply(&op);
    }
    for i in 0..12 {
        world.apply(&Op::CreateKey {
            user: i % 2,
            name: i % NAMES.len(),
            expires_in: None,
        });
    }
    world.check_counts();
    let world = reopen(world, edit);
    world.check_counts();
    world.check_lists();
}

/// Closes the world's store (sled), edits its files with `edit`, and opens it again.
fn reopen(world: World, edit: impl FnOnce(&tamper::Raw)) -> World {
    let path = world.store.path().to_owned();
    let World {
        _dir,
        store,
        clock,
        keys,
        users,
        groups,
        ..
    } = world;
    drop(store);
    {
        edit(&tamper::Raw::open(&path));
    }
    let config = support::config()
        .index_chunk_positions(2)
        .clock(clock.clone())
        .usage_flush_interval(None)
        .background_jobs(false);
    let store = Store::open(&path, config).unwrap();
    World {
        _dir,
        store,
        clock,
        admin: Actor::system(),
        keys,
        users,
        groups,
        next_name: 100,
    }
}

/// A count that is well formed but out of step with the records (a hand-edited store)
/// reads as it is; once a write would take it below zero, the next open counts the records
/// again, leaving the indexes alone (it stayed at 0 for good before).
#[test]
fn a_count_that_would_fall_below_zero_is_rebuilt_at_the_next_open() {
    if support::on_postgres() {
        return;
    }
    let mut world = World::new();
    for user in 0..3 {
        world.apply(&Op::CreateKey {
            user,
            name: user,
            expires_in: None,
        });
    }
    world.check_counts();
    let mut world = reopen(world, |db| {
        db.apply(vec![(
            b"m:n:active".to_vec(),
            Some(1_u64.to_be_bytes().to_vec()),
        )]);
    });
    assert_eq!(
        world.store.stats().unwrap().keys["active"],
        1,
        "read as it is"
    );
    world.apply(&Op::Revoke(0));
    world.apply(&Op::Revoke(1));
    // Marked for a count only: the indexes stay as they are.
    let world = reopen(world, |db| {
        assert!(db.get(b"m:recount").is_some());
        assert_eq!(db.get(b"m:indexed").as_deref(), Some(&b"2"[..]));
    });
    world.check_counts();
    world.check_lists();
}

/// Counts and lists survive a reopen, and a store whose indexes are missing (written
/// before they existed) rebuilds them at open.
#[test]
fn indexes_and_counts_are_rebuilt_when_missing() {
    // Removes index entries from the store's files: a store in a directory only.
    if support::on_postgres() {
        return;
    }
    reopened_after(|db| {
        let stale: Vec<_> = [b"x:".as_slice(), b"m:n:", b"m:i", b"ut:", b"ug:", b"m:u"]
            .into_iter()
            .flat_map(|prefix| db.keys_with_prefix(prefix))
            .collect();
        assert!(stale.len() > 27, "the indexes were there: {}", stale.len());
        db.apply(stale.into_iter().map(|key| (key, None)).collect());
    });
}

/// A store whose trail went on without the index of users by tenant (written by a build
/// before it: users moved without their entries) has it built again at open.
#[test]
fn the_tenant_index_is_rebuilt_after_writes_without_it() {
    if support::on_postgres() {
        return;
    }
    reopened_after(|db| {
        let entries = db.keys_with_prefix(b"ut:");
        assert!(!entries.is_empty());
        let mut writes: Vec<_> = entries.into_iter().map(|key| (key, None)).collect();
        // The mark one event behind the trail.
        let seq = u64::from_be_bytes(db.get(b"m:seq").unwrap().try_into().unwrap());
        writes.push((
            b"m:users_indexed".to_vec(),
            Some((seq - 1).to_be_bytes().to_vec()),
        ));
        db.apply(writes);
    });
}

/// A store whose indexes have the first layout (one empty entry per position, index
/// version 1) is rebuilt into chunks at open: the old entries go (a list reading one
/// would fail: an empty value is no chunk), lists and counts are right.
#[test]
fn indexes_of_the_first_layout_are_rebuilt_into_chunks() {
    if support::on_postgres() {
        return;
    }
    reopened_after(|db| {
        let mut writes = Vec::new();
        for key in db.keys_with_prefix(b"x:") {
            // An entry as version 1 wrote it: index, position, key id; empty value.
            let old = [key.as_slice(), &[7; 8], Uuid::now_v7().as_bytes()].concat();
            writes.push((key, None));
            writes.push((old, Some(Vec::new())));
        }
        writes.push((b"m:indexed".to_vec(), Some(b"1".to_vec())));
        db.apply(writes);
    });
}
/// Pages read while other threads create, revoke and delete keys list every key that
/// exists from before the first page to after the last exactly once, in order.
#[test]
fn pages_under_concurrent_writes_list_every_lasting_key_once() {
    let world = World::new();
    let store = world.store.clone();
    let admin = Actor::system();
    let user = world.users[0];
    let new_key = move |name: String| NewKey {
        name,
        user_id: user,
        ..NewKey::default()
    };
    let lasting: Vec<Uuid> = store
        .create_keys(
            &admin,
            &(0..120)
                .map(|i| new_key(format!("lasting {i:03}")))
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .into_iter()
        .map(|c| c.key.id)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: the readers stop it long before this ends.
            for i in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let created = store.create_key(&admin, new_key(format!("churn {i:04}")));
                let id = created.unwrap().key.id;
                if i % 2 == 0 {
                    store.revoke_key(&admin, id).unwrap();
                    store.delete_key(&admin, id).unwrap();
                } else if i % 3 == 0 {
                    store.revoke_key(&admin, id).unwrap();
                }
            }
        })
    };
    for sort in ["created_at", "-created_at", "name", "-name"] {
        for user_id in [None, Some(user)] {
            let query = KeyQuery {
                user_id,
                sort: sort.parse().unwrap(),
                limit: 7,
                ..KeyQuery::default()
            };
            let seen = world.pages(&world.admin, query);
            let listed: Vec<Uuid> = seen
                .iter()
                .copied()
                .filter(|id| lasting.contains(id))
                .collect();
            // Created in one transaction, at one instant: the id breaks the tie.
            let mut expected = lasting.clone();
            if sort.contains("created_at") {
                expected.sort();
            }
            if sort.starts_with('-') {
                expected.reverse();
            }
            assert_eq!(listed, expected, "sort {sort}, user {user_id:?}");
            let mut unique = seen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), seen.len(), "no key twice, sort {sort}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

/// A search reads at most 1,000 index positions a page: across 2,500 keys its pages are
/// short but continue, and together they list each match once, in order, with its usage
/// controls (read for a whole page at once).
#[test]
fn a_search_pages_past_the_scan_budget_and_lists_each_match_once() {
    let world = World::new();
    let user = world.users[0];
    let matches = [10, 1_500, 1_501, 2_400];
    let keys: Vec<NewKey> = (0..2_500)
        .map(|i| NewKey {
            name: if matches.contains(&i) {
                format!("needle {i}")
            } else {
                format!("hay {i}")
            },
            user_id: user,
            allowed_ips: if matches.contains(&i) {
                vec!["10.0.0.0/8".parse().unwrap()]
            } else {
                Vec::new()
            },
            ..NewKey::default()
        })
        .collect();
    let created: Vec<Uuid> = world
        .store
        .create_keys(&world.admin, &keys)
        .unwrap()
        .into_iter()
        .map(|c| c.key.id)
        .collect();
    for (limit, descending) in [(50, false), (1, false), (2, true)] {
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = world
                .store
                .list_keys(&KeyQuery {
                    search: Some("NEEDLE".into()),
                    sort: KeySort {
                        field: SortField::CreatedAt,
                        descending,
                    },
                    limit,
                    cursor: cursor.take(),
                    ..KeyQuery::default()
                })
                .unwrap();
            for key in &page.items {
                assert_eq!(
                    key.allowed_ips,
                    vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]
                );
            }
            pages.push(page.items.iter().map(|k| k.id).collect::<Vec<_>>());
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(pages.len() < 20, "too many pages: {pages:?}");
        }
        // Created in one transaction, at one instant: the id breaks the tie.
        let mut expected: Vec<Uuid> = matches.iter().map(|&i| created[i]).collect();
        expected.sort();
        if descending {
            expected.reverse();
        }
        assert_eq!(
            pages.concat(),
            expected,
            "limit {limit}, descending {descending}"
        );
        // 2,500 positions at 1,000 a page: at least three pages, whatever the limit.
        assert!(pages.len() >= 3, "limit {limit}: {pages:?}");
        assert!(pages.iter().all(|p| p.len() <= limit));
    }
}

/// A backlog of keys that expired together, bigger than one sweep takes, is counted and
/// listed whole by the next read (one sweep of 1,000 keys before a read left the rest
/// active until later sweeps, a second apart).
#[test]
fn a_read_counts_every_key_of_a_backlog_that_expired_together() {
    let world = World::new();
    let user = world.users[0];
    let expires_at = Some(world.clock.now() + Duration::seconds(1));
    for batch in 0..3_u32 {
        let items: Vec<ImportKey> = (0..850_u32)
            .map(|i| ImportKey {
                secret: ImportSecret::sha256(&format!("{:064x}", batch * 1_000 + i)).unwrap(),
                prefix: Some(format!("old_{batch}_{i}")),
                name: None,
                expires_at,
                scopes: None,
                meta: None,
            })
            .collect();
        let imported = world.store.import_keys(&world.admin, user, &items).unwrap();
        assert!(imported.iter().all(Result::is_ok));
    }
    world.clock.advance(Duration::seconds(2));
    let active = KeyQuery {
        status: Some(KeyStatus::Active),
        ..KeyQuery::default()
    };
    let listed = world.store.list_keys(&active).unwrap();
    assert_eq!(listed.items.len(), 0, "every key expired");
    let stats = world.store.stats().unwrap();
    assert_eq!((stats.keys["expired"], stats.keys["active"]), (2_550, 0));
}

/// A tenant-bound caller's pages hold its tenant's keys only, in every sort and filter:
/// full at any depth behind more of another tenant's keys than a page passes over (its
/// users' indexes, merged); the same keys, in pages that may be short, when the tenant has
/// more users than a page merges (the index of every key).
#[test]
fn a_tenant_s_key_pages_are_full_behind_another_tenant_s_keys() {
    for merged in [1_000, 1] {
        let (_dir, store, clock) =
            support::clocked_store(T0, |c| c.background_jobs(false).tenant_list_users(merged));
        let admin = Actor::system();
        let user = |name: &str, tenant: Option<&str>| {
            let new = NewUser {
                name: name.into(),
                tenant_id: tenant.map(Into::into),
                ..NewUser::default()
            };
            store.create_user(&admin, new).unwrap().id
        };
        let acme = [user("acme-1", Some("acme")), user("acme-2", Some("acme"))];
        let globex = user("globex", Some("globex"));
        let global = user("global", None);
        let keys = |owner: Uuid, names: std::ops::Range<usize>| {
            let keys: Vec<NewKey> = names
                .map(|i| NewKey {
                    name: format!("k-{i:04}"),
                    user_id: owner,
                    env: if i % 3 == 0 { Env::Test } else { Env::Live },
                    ..NewKey::default()
                })
                .collect();
            let created = store.create_keys(&admin, &keys).unwrap();
            clock.advance(Duration::seconds(1));
            created.into_iter().map(|c| c.key.id).collect::<Vec<_>>()
        };
        let first = keys(acme[0], 0..3);
        keys(globex, 3..1_203);
        let last = keys(acme[1], 1_203..1_207);
        keys(global, 1_207..1_210);
        keys(acme[0], 1_210..1_212);
        store.revoke_key(&admin, first[1]).unwrap();
        store.record_usage(last[2], 1, clock.now());
        store.flush().unwrap();
        let ours: HashSet<Uuid> = acme
            .iter()
            .flat_map(|user| {
                let query = KeyQuery {
                    user_id: Some(*user),
                    limit: 1_000,
                    ..KeyQuery::default()
                };
                store.list_keys(&query).unwrap().items
            })
            .map(|k| k.id)
            .collect();
        assert_eq!(ours.len(), 9);
        let bound = Actor::new(None, PermissionSet::parse(["*"]).unwrap())
            .with_tenant(Some("acme".into()), None);

        let pages = |actor: &Actor, query: &KeyQuery| {
            let mut pages = Vec::new();
            let mut query = query.clone();
            loop {
                let page = store.list_keys_as(actor, &query).unwrap();
                pages.push(page.items.iter().map(|k| k.id).collect::<Vec<_>>());
                match page.next_cursor {
                    Some(cursor) => query.cursor = Some(cursor),
                    None => return pages,
                }
                assert!(pages.len() < 100, "too many pages");
            }
        };
        let sorts = [SortField::CreatedAt, SortField::Name, SortField::LastUsedAt];
        for field in sorts {
            for descending in [false, true] {
                let sort = KeySort { field, descending };
                let queries = [
                    KeyQuery::default(),
                    KeyQuery {
                        status: Some(KeyStatus::Active),
                        ..KeyQuery::default()
                    },
                    KeyQuery {
                        env: Some(Env::Test),
                        ..KeyQuery::default()
                    },
                    KeyQuery {
                        search: Some("K-12".into()),
                        ..KeyQuery::default()
                    },
                ];
                for query in queries {
                    let query = KeyQuery {
                        sort,
                        limit: 2,
                        ..query
                    };
                    // What a global caller lists, the other tenants' keys taken out.
                    let all = pages(
                        &admin,
                        &KeyQuery {
                            limit: 1_000,
                            ..query.clone()
                        },
                    );
                    let expected: Vec<Uuid> = all
                        .concat()
                        .into_iter()
                        .filter(|id| ours.contains(id))
                        .collect();
                    let seen = pages(&bound, &query);
                    let context = format!("{merged} users merged at most, {query:?}");
                    assert_eq!(seen.concat(), expected, "{context}");
                    if merged == 1_000 {
                        let full = seen.split_last().unwrap().1;
                        assert!(full.iter().all(|p| p.len() == 2), "{context}: {seen:?}");
                        assert_eq!(seen.len(), expected.len().div_ceil(2).max(1), "{context}");
                    }
                }
            }
        }
    }
}

/// A tenant-bound caller's users list reads its tenant's users only: its pages are full
/// behind more of another tenant's users than a page may pass over.
#[test]
fn a_tenant_s_user_pages_are_full_behind_another_tenant_s_users() {
    let (_dir, store, _clock) = support::clocked_store(T0, |c| c.background_jobs(false));
    let admin = Actor::system();
    let user = |name: String, tenant: &str| {
        let new = NewUser {
            name,
            tenant_id: Some(tenant.into()),
            ..NewUser::default()
        };
        store.create_user(&admin, new).unwrap().id
    };
    let first = user("acme-0".into(), "acme");
    for i in 0..1_001 {
        user(format!("globex-{i}"), "globex");
    }
    let acme = [
        first,
        user("acme-1".into(), "acme"),
        user("acme-2".into(), "acme"),
    ];
    let bound = Actor::new(None, PermissionSet::new()).with_tenant(Some("acme".into()), None);
    let mut pages: Vec<Vec<Uuid>> = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.users_page_as(&bound, 2, cursor.as_deref()).unwrap();
        pages.push(page.items.iter().map(|u| u.id).collect());
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages.len() < 10, "{pages:?}");
    }
    assert_eq!(pages, [vec![acme[0], acme[1]], vec![acme[2]]]);
    // A global caller's cursor goes on in no bound caller's list, nor the other way round
    // (a cursor is bound to the list it came from: trust hunt s56 L2).
    let global = store.users_page(1, None).unwrap();
    assert_eq!(global.items[0].id, acme[0]);
    let invalid = |result: Result<_, StoreError>| {
        matches!(
            result,
            Err(StoreError::Invalid {
                field: "cursor",
                ..
            })
        )
    };
    assert!(invalid(store.users_page_as(
        &bound,
        1,
        global.next_cursor.as_deref()
    )));
    let bound_page = store.users_page_as(&bound, 1, None).unwrap();
    assert!(invalid(
        store.users_page(1, bound_page.next_cursor.as_deref())
    ));
}
