//! `latchkey keys …`.

use std::process::ExitCode;

use latchkey_admin::api::{KeyWithSecret, List, RotateKey, UpdateKey};
use latchkey_core::key::MAX_DISPLAY_PREFIX_LEN;
use latchkey_core::{ApiKey, Key, PermissionSet, PublicId, limits};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::{Body, Cli, cleaned, usage_flags};
use crate::cli::{KeyAdd, KeyList, KeysCommand};
use crate::client::{Client, more, query, segment};
use crate::duration::parse_duration;
use crate::output::{Table, actor, fields, joined, or_dash, print_json, read, when};
use crate::transport::{Transport, forbidden};

pub(super) async fn run<T: Transport>(
    cli: &Cli<T>,
    command: KeysCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Add(args) => add(cli, args).await?,
        KeysCommand::Import(args) => return super::import::run(cli, args).await,
        KeysCommand::List(args) => list(cli, args).await?,
        KeysCommand::Show { key } => {
            let key = cli.api.get(&path(&key)?).await?;
            print_key(cli, &key).await?;
        }
        KeysCommand::Update(args) => {
            let body = Body::default()
                .opt("name", args.name)
                .opt("description", args.description)
                .clear("description", args.clear_description)
                .opt("credits", args.add_credits.map(|n| json!({"add": n})));
            let body = usage_flags::add_to(body, args.usage, true)?;
            let body = match args.clear_refill {
                true => usage_flags::without_refill(body),
                false => body,
            };
            let all = args.clear_usage_control;
            let body = [
                ("meta", args.clear_meta),
                ("rate_limits", args.clear_rate_limits),
                ("credits", args.clear_credits),
                ("allowed_ips", args.clear_allowed_ips),
            ]
            .into_iter()
            .fold(body, |b, (field, one)| b.clear(field, all || one));
            let key = super::update(&cli.api, &path(&args.key)?, body).await?;
            print_key(cli, &key).await?;
        }
        KeysCommand::Disable { key } => {
            let key = cli.api.patch(&path(&key)?, enabled(false)).await?;
            print_key(cli, &key).await?;
        }
        KeysCommand::Enable { key } => {
            let key = cli.api.patch(&path(&key)?, enabled(true)).await?;
            print_key(cli, &key).await?;
        }
        KeysCommand::Revoke { key } => {
            let revoke = format!("{}/revoke", path(&key)?);
            let key = cli.api.call(http::Method::POST, &revoke, None).await?;
            print_key(cli, &key).await?;
        }
        KeysCommand::Delete { key } => {
            // Read first, to name it by prefix and id; a caller that may delete keys but
            // not read them deletes it as given (audit s60 M1: it was refused).
            let (id, done) = match cli.api.get(&path(&key)?).await {
                Ok(record) => {
                    let record: Key = read(&record)?;
                    let id = record.id.to_string();
                    let done = format!("Deleted key {} ({id}).", record.prefix);
                    (id, done)
                }
                Err(e) if forbidden(&e) => {
                    let given = reference(&key)?;
                    let done = format!("Deleted key {given}.");
                    (given, done)
                }
                Err(e) => return Err(e),
            };
            super::delete(cli, &path(&id)?, &id, &done).await?;
        }
        KeysCommand::Rotate { key, grace } => {
            let grace_text = grace.trim().to_owned();
            let grace = parse_duration(&grace_text).map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                grace.as_secs() <= limits::MAX_GRACE_SECONDS,
                "--grace {grace_text} is longer than a rotation's grace may be: at most 365d \
                 (a year of 365 days; `1y` is 365.25)"
            );
            // The user is named first: a rotation without grace of the very key this
            // command sends leaves it nothing to read the user with afterwards.
            let user = if cli.out.json {
                None
            } else {
                key_user_label(&cli.api, &path(&key)?).await
            };
            let created = cli
                .api
                .post(
                    &format!("{}/rotate", path(&key)?),
                    RotateKey {
                        grace_seconds: grace.as_secs(),
                    },
                )
                .await?;
            print_created(cli, &created, user).await?;
            if !cli.out.json {
                if grace.is_zero() {
                    println!("The old key stopped working now.");
                } else {
                    println!("The old key keeps working for {grace_text}.");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn add<T: Transport>(cli: &Cli<T>, args: KeyAdd) -> anyhow::Result<()> {
    let expires_at = args.expires_at.as_deref().map(expiry).transpose()?;
    let body = Body::default()
        .opt("name", Some(args.name))
        .opt("user_id", Some(args.user))
        .opt("description", args.description)
        .opt("scopes", args.scopes.map(cleaned))
        .opt("expires_at", expires_at)
        .opt("env", args.env);
    let body = usage_flags::add_to(body, args.usage, false)?;
    let created = cli.api.post("/v1/keys", body.build()).await?;
    print_created(cli, &created, None).await?;
    Ok(())
}

async fn list<T: Transport>(cli: &Cli<T>, args: KeyList) -> anyhow::Result<()> {
    let path = format!(
        "/v1/keys{}",
        query(&[
            ("user_id", args.user),
            ("status", args.status),
            ("env", args.env),
            ("q", args.search),
            ("sort", args.sort),
            ("limit", args.limit.map(|l| l.to_string())),
            ("cursor", args.cursor),
        ])
    );
    let answer = cli.api.get(&path).await?;
    if cli.out.json {
        print_json(&answer);
        return Ok(());
    }
    let keys: List<Key> = read(&answer)?;
    let users = cli
        .api
        .names_of("users", keys.items.iter().map(|k| k.user_id))
        .await;
    let mut table = Table::new(&["ID", "PREFIX", "NAME", "USER", "STATUS", "LAST USED"]);
    for key in &keys.items {
        table.row(vec![
            key.id.to_string(),
            key.prefix.clone(),
            key.name.clone(),
            users
                .get(&key.user_id)
                .cloned()
                .unwrap_or_else(|| key.user_id.to_string()),
            key.status.to_string(),
            when(key.last_used_at),
        ]);
    }
    table.print("No keys.");
    more(&keys, "keys");
    Ok(())
}

/// `PATCH /v1/keys/{id}` enabling or disabling the key.
fn enabled(enabled: bool) -> UpdateKey {
    UpdateKey {
        enabled: Some(enabled),
        ..UpdateKey::default()
    }
}

/// The path of a key: by its id (a UUID), its display prefix or its public id, as the API
/// resolves a key. A latchkey key given in full is reduced to its display prefix; any
/// other text is refused here, before a request, so that a secret (a key of another
/// system, imported) never travels in a URL, into an access log or back in an error.
pub(super) fn path(key: &str) -> anyhow::Result<String> {
    Ok(format!("/v1/keys/{}", segment(&reference(key)?)))
}

/// The reference [`path`] sends for `key`: a key given in full is reduced to its display
/// prefix.
fn reference(key: &str) -> anyhow::Result<String> {
    let key = key.trim();
    Ok(match ApiKey::parse(key) {
        Ok(parsed) => parsed.display_prefix().to_owned(),
        Err(_) if is_reference(key) => key.to_owned(),
        Err(_) if key.len() > MAX_DISPLAY_PREFIX_LEN => anyhow::bail!(
            "that looks like a full key: give its display prefix or id (see `latchkey keys \
             list`); it was not sent"
        ),
        Err(_) => anyhow::bail!(
            "not a key reference: give the key's id, display prefix (lk_live_<id>) or public id"
        ),
    })
}

/// Whether the API could know a key by `text`: a UUID, a public id, or a display prefix
/// (up to and including a public id, no longer than the longest).
fn is_reference(text: &str) -> bool {
    let public_id = text.rsplit('_').next().unwrap_or(text);
    Uuid::parse_str(text).is_ok()
        || (text.len() <= MAX_DISPLAY_PREFIX_LEN && PublicId::parse(public_id).is_ok())
}

/// `--expires-at`: an RFC 3339 time, passed through, or a duration from now, rounded up to
/// a whole second (a key never lives shorter than asked: `1s` cut down to the second
/// lived 0.15 s).
fn expiry(text: &str) -> anyhow::Result<String> {
    if OffsetDateTime::parse(text, &Rfc3339).is_ok() {
        return Ok(text.to_owned());
    }
    let duration = parse_duration(text).map_err(|_| {
        anyhow::anyhow!(
            "invalid --expires-at {text:?}: expected an RFC 3339 time such as \
             2030-01-01T00:00:00Z, or a duration from now such as 90d"
        )
    })?;
    anyhow::ensure!(
        !duration.is_zero(),
        "invalid --expires-at {text:?}: must be in the future"
    );
    let at = time::Duration::try_from(duration)
        .ok()
        .and_then(|d| OffsetDateTime::now_utc().checked_add(d))
        .and_then(|at| at.checked_add(time::Duration::SECOND))
        .ok_or_else(|| anyhow::anyhow!("invalid --expires-at {text:?}: too far in the future"))?;
    Ok(at.replace_nanosecond(0)?.format(&Rfc3339)?)
}

/// A user by name and id, or by id alone when the caller may not read it.
async fn user_label<T: Transport>(api: &Client<T>, id: Uuid) -> String {
    let user = api.get(&format!("/v1/users/{id}")).await;
    match user
        .ok()
        .and_then(|user| read::<latchkey_core::User>(&user).ok())
    {
        Some(user) => format!("{} ({id})", user.name),
        None => id.to_string(),
    }
}

/// The user of the key at `path`, as [`user_label`] names it; `None` when the key cannot
/// be read.
async fn key_user_label<T: Transport>(api: &Client<T>, path: &str) -> Option<String> {
    let key: Key = read(&api.get(path).await.ok()?).ok()?;
    Some(user_label(api, key.user_id).await)
}

async fn print_key<T: Transport>(cli: &Cli<T>, answer: &Value) -> anyhow::Result<()> {
    if cli.out.json {
        print_json(answer);
        return Ok(());
    }
    let key: Key = read(answer)?;
    let user = user_label(&cli.api, key.user_id).await;
    let mut lines = vec![
        ("id", key.id.to_string()),
        ("name", key.name.clone()),
        ("description", or_dash(key.description.as_deref())),
        ("user", user),
        ("prefix", key.prefix.clone()),
        ("env", key.env.to_string()),
        ("status", key.status.to_string()),
        ("scopes", scopes(key.scopes.as_ref())),
        ("expires_at", when(key.expires_at)),
        ("revoked_at", when(key.revoked_at)),
        ("created_at", when(Some(key.created_at))),
        ("created_by", actor(key.created_by)),
        ("rotated_from", or_dash(key.rotated_from)),
        ("last_used_at", when(key.last_used_at)),
        ("usage_count", key.usage_count.to_string()),
    ];
    lines.extend(usage_flags::lines(&key));
    print!("{}", fields(&lines));
    Ok(())
}

/// A new key: its record, then the secret alone on its line, shown this once. `user`
/// names its user when the caller has read it already, else it is read now.
pub(crate) async fn print_created<T: Transport>(
    cli: &Cli<T>,
    answer: &Value,
    user: Option<String>,
) -> anyhow::Result<()> {
    if cli.out.json {
        print_json(answer);
        return Ok(());
    }
    let created: KeyWithSecret = match read(answer) {
        Ok(created) => created,
        // The key exists: its secret is printed whatever else of the answer does not read
        // (a daemon of another version), since no answer will ever hold it again.
        Err(e) => {
            if let Some(secret) = answer.get("secret").and_then(Value::as_str) {
                println!("Secret (store immediately):");
                println!("{secret}");
            }
            return Err(e);
        }
    };
    let user = match user {
        Some(user) => user,
        None => user_label(&cli.api, created.key.user_id).await,
    };
    print_secret_block(&created.key, &created.secret, &user);
    Ok(())
}

/// The human form of a created key, shared with `init` and `serve`.
pub(crate) fn print_secret_block(key: &Key, secret: &str, user: &str) {
    let mut lines = vec![
        ("id", key.id.to_string()),
        ("name", key.name.clone()),
        ("user", user.to_owned()),
        ("prefix", key.prefix.clone()),
    ];
    // What `--expires-at 90d` (or a rotation's grace) came to, without a `keys show`.
    if key.expires_at.is_some() {
        lines.push(("expires_at", when(key.expires_at)));
    }
    print!("{}", fields(&lines));
    println!("Secret (store immediately):");
    println!("{secret}");
}

fn scopes(scopes: Option<&PermissionSet>) -> String {
    match scopes {
        None => "(unrestricted: the user's permissions)".to_owned(),
        Some(scopes) if scopes.is_empty() => "(none)".to_owned(),
        Some(scopes) => joined(scopes.iter()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::{Env, Prefix};

    #[test]
    fn a_full_key_never_reaches_a_url() {
        let key = ApiKey::generate(&Prefix::default(), Env::Live);
        let full = path(key.expose()).unwrap();
        assert_eq!(full, format!("/v1/keys/{}", key.display_prefix()));
        assert!(!full.contains(key.secret()));
        for reference in [
            "lk_live_4fT9kQ2mX8pZ",
            "acmecorp_test_4fT9kQ2mX8pZ",
            "4fT9kQ2mX8pZ",
            "0190b7c4-52a1-7cc1-9a1e-8e0d7c1f2a3b",
        ] {
            assert_eq!(path(reference).unwrap(), format!("/v1/keys/{reference}"));
        }
        // Another system's key, as imported: refused before any request, and not echoed.
        let theirs = "sk_live_51H8xQ2eZvKYlo2C9aXbWq7Tz0pLmN3sV";
        let error = path(theirs).unwrap_err().to_string();
        assert!(error.contains("that looks like a full key"), "{error}");
        assert!(!error.contains(&theirs[8..]), "{error}");
        for junk in ["nope", "lk_live_4fT9kQ2m", "a/b", ""] {
            let error = path(junk).unwrap_err().to_string();
            assert!(error.contains("not a key reference"), "{junk}: {error}");
        }
    }

    #[test]
    fn expiry_accepts_times_and_durations() {
        assert_eq!(
            expiry("2030-01-01T00:00:00Z").unwrap(),
            "2030-01-01T00:00:00Z"
        );
        let in_a_day = OffsetDateTime::parse(&expiry("1d").unwrap(), &Rfc3339).unwrap();
        let delta = in_a_day - OffsetDateTime::now_utc();
        assert!(
            delta > time::Duration::hours(23)
                && delta <= time::Duration::hours(24) + time::Duration::SECOND
        );
        // Rounded up, never down: at least the second asked for.
        let asked = OffsetDateTime::now_utc() + time::Duration::SECOND;
        let at = OffsetDateTime::parse(&expiry("1s").unwrap(), &Rfc3339).unwrap();
        assert!(
            at >= asked && at <= asked + time::Duration::SECOND,
            "{at} for {asked}"
        );
        assert!(expiry("0s").unwrap_err().to_string().contains("future"));
        assert!(
            expiry("tomorrow")
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
    }
}
