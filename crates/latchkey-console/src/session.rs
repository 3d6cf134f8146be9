//! Server-side sessions: a random id in the cookie, the key in memory only.

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Most sessions at a time; signing in beyond it ends the least recently used session of
/// the tenant holding the most (the signer's own on a tie; keys of no tenant count as one
/// tenant), so that one tenant's sign-ins never bring another below its own count.
pub const MAX_SESSIONS: usize = 1_000;
/// Most sessions of one user, whichever of its keys signed them in; signing in beyond that
/// ends its least recently used one, so that one user signing in again and again, with one
/// key or with many, ends no one else's session.
pub const MAX_SESSIONS_PER_USER: usize = 8;
/// A session ends after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 60 * 60);
/// How many one-time forms a session keeps open (shown, not yet submitted); showing one
/// more forgets the oldest, which is then refused as a stale form.
const MAX_OPEN_FORMS: usize = 64;

/// A random token: 32 bytes from the OS, as hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The API key a session signed in with. Its `Debug` hides it.
#[derive(Clone)]
pub(crate) struct SessionKey(String);

impl SessionKey {
    pub(crate) fn new(key: String) -> SessionKey {
        SessionKey(key)
    }

    /// The key, for the in-process API call's `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// One signed-in session. Its `Debug` shows neither the key nor a token.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) key: SessionKey,
    /// The user the key belonged to at sign-in: its sessions are counted together.
    user: Uuid,
    /// That user's tenant at sign-in (`None`: no tenant): a full table ends a session of
    /// the tenant holding the most.
    tenant: Option<String>,
    /// The token every form of this session carries.
    pub(crate) csrf: String,
    started: Instant,
    last_seen: Instant,
    /// The one-time form tokens issued and not yet submitted, oldest first.
    open_forms: VecDeque<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_seen) > IDLE_TIMEOUT
            || now.duration_since(self.started) > MAX_AGE
    }
}

/// The signed-in sessions, bounded. Its `Debug` shows how many: each id is a credential.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

/// The sessions, locked; `latchkey_console_sessions` says how many there are when the lock
/// is let go, whatever the holder changed (an expired session removed on a read included).
struct Held<'a>(MutexGuard<'a, HashMap<String, Session>>);

impl Deref for Held<'_> {
    type Target = HashMap<String, Session>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        latchkey_admin::set_console_sessions(self.0.len());
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.len())
            .finish()
    }
}

impl Sessions {
    fn lock(&self) -> Held<'_> {
        Held(
            self.inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Opens a session for `key` of `user` in `tenant`; returns its id.
    pub(crate) fn open(&self, key: SessionKey, user: Uuid, tenant: Option<String>) -> String {
        let now = Instant::now();
        let id = random_token();
        let mut sessions = self.lock();
        sessions.retain(|_, s| !s.expired(now));
        let evicted =
            if sessions.values().filter(|s| s.user == user).count() >= MAX_SESSIONS_PER_USER {
                least_recent(&sessions, |s| s.user == user)
            } else if sessions.len() >= MAX_SESSIONS {
                let crowded = most_crowded(&sessions, &tenant);
                least_recent(&sessions, |s| s.tenant == crowded)
            } else {
                None
            };
        if let Some(id) = evicted {
            sessions.remove(&id);
        }
        sessions.insert(
            id.clone(),
            Session {
                key,
                user,
                tenant,
                csrf: random_token(),
                started: now,
                last_seen: now,
                open_forms: VecDeque::new(),
            },
        );
        id
    }

    /// The live session `id`, not touched (see [`Sessions::touch`]); `None` when unknown or
    /// expired (then removed).
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut sessions = self.lock();
        let session = sessions.get(id)?;
        if session.expired(now) {
            sessions.remove(id);
            return None;
        }
        Some(session.clone())
    }

    /// Session `id` used now: its idle time starts again. Only once its key has been let
    /// through from the browser's address: a cookie used where the key is refused (its
    /// `allowed_ips`) keeps no session alive.
    pub(crate) fn touch(&self, id: &str) {
        if let Some(session) = self.lock().get_mut(id) {
            session.last_seen = Instant::now();
        }
    }

    /// Ends session `id`.
    pub(crate) fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// A new one-time form token for session `id` (a create or rotate form), remembered
    /// until submitted.
    pub(crate) fn issue_form(&self, id: &str) -> String {
        let once = random_token();
        if let Some(session) = self.lock().get_mut(id) {
            if session.open_forms.len() >= MAX_OPEN_FORMS {
                session.open_forms.pop_front();
            }
            session.open_forms.push_back(once.clone());
        }
        once
    }

    /// Claims one-time form `once`: `true` the first time it comes back to the session that
    /// issued it; `false` when it was submitted already, never issued, or forgotten.
    pub(crate) fn use_form(&self, id: &str, once: &str) -> bool {
        let mut sessions = self.lock();
        let Some(session) = sessions.get_mut(id) else {
            return false;
        };
        match session.open_forms.iter().position(|open| open == once) {
            Some(at) => {
                session.open_forms.remove(at);
                true
            }
            None => false,
        }
    }

    /// The ids and keys of the sessions of `user`, or of every session for `None`.
    pub(crate) fn keys_of(&self, user: Option<Uuid>) -> Vec<(String, SessionKey)> {
        self.lock()
            .iter()
            .filter(|(_, s)| user.is_none_or(|u| s.user == u))
            .map(|(id, s)| (id.clone(), s.key.clone()))
            .collect()
    }

    /// Forgets the sessions that expired (their keys with them).
    pub(crate) fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        self.lock().retain(|_, s| !s.expired(now));
    }

    /// How many sessions are open (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The id of the least recently used session among those `of` picks.
fn least_recent(
    sessions: &HashMap<String, Session>,
    of: impl Fn(&Session) -> bool,
) -> Option<String> {
    sessions
        .iter()
        .filter(|(_, s)| of(s))
        .min_by_key(|(_, s)| s.last_seen)
        .map(|(id, _)| id.clone())
}

/// The tenant holding the most sessions; `own` when it holds as many as any other.
fn most_crowded(sessions: &HashMap<String, Session>, own: &Option<String>) -> Option<String> {
    let mut counts: HashMap<&Option<String>, usize> = HashMap::new();
    for session in sessions.values() {
        *counts.entry(&session.tenant).or_default() += 1;
    }
    let own_count = counts.get(own).copied().unwrap_or(0);
    match counts.into_iter().max_by_key(|(_, n)| *n) {
        Some((tenant, n)) if n > own_count => tenant.clone(),
        _ => own.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(sessions: &Sessions, key: &str, user: u128) -> String {
        sessions.open(SessionKey::new(key.into()), Uuid::from_u128(user), None)
    }

    #[test]
    fn one_tenant_signing_in_many_users_ends_only_its_own_sessions() {
        let sessions = Sessions::default();
        let operator = open(&sessions, "op", 0);
        let other_tenant = sessions.open(
            SessionKey::new("g".into()),
            Uuid::from_u128(1),
            Some("globex".into()),
        );
        let acme = |i: usize| {
            sessions.open(
                SessionKey::new(format!("a{i}")),
                Uuid::from_u128(1_000 + i as u128),
                Some("acme".into()),
            )
        };
        let first_of_acme = acme(0);
        // A new user of the tenant at each sign-in, far past the table's bound.
        for i in 1..2 * MAX_SESSIONS {
            acme(i);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(
            sessions.get(&operator).is_some(),
            "no tenant's session stays"
        );
        assert!(
            sessions.get(&other_tenant).is_some(),
            "another tenant's session stays"
        );
        assert!(
            sessions.get(&first_of_acme).is_none(),
            "the tenant's own oldest session was ended"
        );
    }

    #[test]
    fn one_user_signing_in_again_and_again_ends_only_its_own_sessions() {
        let sessions = Sessions::default();
        let other = open(&sessions, "other", 2);
        let first = open(&sessions, "k", 1);
        // With one key, or a new key each time: the user's sessions are counted together.
        for i in 0..MAX_SESSIONS {
            open(&sessions, "k", 1);
            open(&sessions, &format!("k{i}"), 1);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS_PER_USER + 1);
        assert!(
            sessions.get(&first).is_none(),
            "its oldest session was ended"
        );
        assert!(
            sessions.get(&other).is_some(),
            "another user's session stays"
        );
    }

    #[test]
    fn sessions_are_bounded_and_forms_used_once() {
        let sessions = Sessions::default();
        let first = open(&sessions, "k", 0);
        for i in 0..MAX_SESSIONS {
            open(&sessions, &format!("k{i}"), i as u128 + 1);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(
            sessions.get(&first).is_none(),
            "the oldest session was ended"
        );
        let id = open(&sessions, "k", 0);
        let once = sessions.issue_form(&id);
        assert!(sessions.use_form(&id, &once));
        assert!(!sessions.use_form(&id, &once), "once only");
        assert!(!sessions.use_form(&id, "abc"), "never issued");
        assert!(!sessions.use_form(&id, ""));
        // However many forms are submitted after it, a used one stays used.
        for _ in 0..2 * MAX_OPEN_FORMS {
            let other = sessions.issue_form(&id);
            assert!(sessions.use_form(&id, &other));
        }
        assert!(!sessions.use_form(&id, &once));
        // Showing many forms forgets the oldest still open.
        let stale = sessions.issue_form(&id);
        for _ in 0..MAX_OPEN_FORMS {
            sessions.issue_form(&id);
        }
        assert!(!sessions.use_form(&id, &stale));
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn a_sweep_forgets_the_expired_sessions_only() {
        let sessions = Sessions::default();
        let (_old, fresh) = (open(&sessions, "old", 0), open(&sessions, "fresh", 1));
        let now = Instant::now();
        // Half an hour and a second from now, the fresh one was used 20 minutes from now.
        sessions.lock().get_mut(&fresh).unwrap().last_seen = now + Duration::from_secs(1200);
        sessions.sweep_at(now + IDLE_TIMEOUT + Duration::from_secs(1));
        let open: Vec<String> = sessions.lock().keys().cloned().collect();
        assert_eq!(open, [fresh]);
    }

    #[test]
    fn reading_a_session_does_not_touch_it() {
        let sessions = Sessions::default();
        let id = open(&sessions, "k", 0);
        let seen = || sessions.lock()[&id].last_seen;
        let opened = seen();
        std::thread::sleep(Duration::from_millis(5));
        assert!(sessions.get(&id).is_some());
        assert_eq!(seen(), opened, "read, not touched");
        sessions.touch(&id);
        assert!(seen() > opened, "touched");
    }

    #[test]
    fn debug_hides_the_key_the_id_and_the_tokens() {
        let key = SessionKey::new("lk_live_secret".into());
        assert!(!format!("{key:?}").contains("secret"));
        let sessions = Sessions::default();
        let id = open(&sessions, "lk_live_secret", 0);
        let once = sessions.issue_form(&id);
        let session = sessions.get(&id).unwrap();
        for shown in [format!("{sessions:?}"), format!("{session:?}")] {
            for hidden in [id.as_str(), &session.csrf, &once, "secret"] {
                assert!(!shown.contains(hidden), "{shown}");
            }
        }
    }
}
