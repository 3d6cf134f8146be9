//! From a `postgres://` URL to the connection settings tokio-postgres takes: the URL as
//! libpq reads it, as far as latchkey can honour it, plus latchkey's own session settings.

use std::time::Duration;

use crate::error::StoreError;
use crate::location::DatabaseUrl;

/// The session settings every connection gets, after the URL's own `options`.
///
/// A writer that died holding the writers' lock loses it with its session; one that hangs
/// inside a transaction loses it by `idle_in_transaction_session_timeout`; one whose
/// machine froze or was cut off (no RST) loses it when the server's keepalive probes go
/// unanswered, in about 30 s. Nothing frees the lock of a process that is stopped
/// (SIGSTOP, a debugger) or hangs between transactions while its machine runs: the lock is
/// a session's, taken outside any transaction, so the session is idle, not idle in a
/// transaction, and the kernel still answers the keepalives. Such a process must be killed
/// (or its backend ended with `pg_terminate_backend`); until then writes answer 503.
///
/// A statement ends on the server too a little before the client gives up on it
/// (`statement_timeout` under `OP_TIMEOUT`): otherwise it would run on, holding its locks
/// and a server connection, after the client discarded the connection.
const SESSION: &str = "-c idle_in_transaction_session_timeout=30000 -c lock_timeout=15000 \
                       -c statement_timeout=19000 \
                       -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 \
                       -c tcp_keepalives_count=3 -c tcp_user_timeout=30000";

/// The durability every connection asks for unless the URL's own `options` choose one: an
/// answer is sent only after its commit is flushed to disk (and to the synchronous
/// standbys), whatever the server, database or role sets by default (`off` is a common
/// tuning that loses the last acknowledged commits in a crash).
const DURABLE: &str = "-c synchronous_commit=on";

/// The connection settings for `url`.
pub(super) fn config(url: &DatabaseUrl) -> Result<tokio_postgres::Config, StoreError> {
    let invalid =
        |why: String| StoreError::invalid("db", format!("not a PostgreSQL URL ({url}): {why}"));
    let mut config: tokio_postgres::Config = libpq_to_tokio(url.expose())
        .map_err(invalid)?
        .parse()
        .map_err(|e: tokio_postgres::Error| invalid(e.to_string()))?;
    // The URL's own options (`options=-c search_path=…`) stay, latchkey's come after.
    let own = config.get_options().unwrap_or("").trim();
    let durable = if own.contains("synchronous_commit") {
        ""
    } else {
        DURABLE
    };
    let options = [own, SESSION, durable]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    config
        .application_name("latchkey")
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .options(options);
    Ok(config)
}

/// Whether `config` says `sslmode=disable` to a host that is not this machine (a loopback
/// address, `localhost`, a Unix socket): what the daemon's own listeners refuse to do
/// without `--insecure-http`, here only warned of (a private network may be trusted).
pub(super) fn in_clear_off_loopback(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::{Host, SslMode};
    if config.get_ssl_mode() != SslMode::Disable {
        return false;
    }
    let off = |host: &Host| match host {
        Host::Tcp(name) => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            match name.parse::<std::net::IpAddr>() {
                Ok(ip) => !ip.is_loopback(),
                Err(_) => !name.eq_ignore_ascii_case("localhost"),
            }
        }
        #[cfg(unix)]
        Host::Unix(_) => false,
    };
    let hosts = config.get_hostaddrs();
    if hosts.is_empty() {
        config.get_hosts().iter().any(off)
    } else {
        hosts.iter().any(|ip| !ip.is_loopback())
    }
}

/// The URL with the parameters of libpq that tokio-postgres does not know rewritten:
/// `sslmode=verify-full` and `verify-ca` become `require`, since latchkey verifies the
/// server's certificate whenever TLS is used (and its host name: `verify-ca` gets the
/// stricter check); `sslrootcert=system` is the default and goes. Another `sslrootcert` is
/// refused with what to do instead.
fn libpq_to_tokio(url: &str) -> Result<String, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", "verify-full" | "verify-ca")) => kept.push("sslmode=require"),
            Some(("sslrootcert", "system")) => {}
            // libpq's `sslcertmode=disable` and `allow` send no certificate: nothing to do.
            Some(("sslcertmode", "disable" | "allow")) => {}
            Some(("sslcert" | "sslkey" | "sslpassword" | "sslcertmode", _)) => {
                return Err(
                    "client certificates (sslcert, sslkey, sslpassword) are not supported: \
                     the database must authenticate latchkey by password (in the URL or \
                     its `password` parameter, over TLS: sslmode=require)"
                        .to_owned(),
                );
            }
            Some(("sslrootcert", _)) => {
                return Err(
                    "sslrootcert is not supported: point the SSL_CERT_FILE environment \
                            variable at that PEM file instead (it replaces the system's roots)"
                        .to_owned(),
                );
            }
            _ => kept.push(pair),
        }
    }
    if kept.is_empty() {
        return Ok(base.to_owned());
    }
    Ok(format!("{base}?{}", kept.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Location;

    fn config_of(url: &str) -> Result<tokio_postgres::Config, StoreError> {
        let Location::Postgres(url) = Location::parse(url) else {
            panic!("not a URL: {url}");
        };
        config(&url)
    }

    #[track_caller]
    fn check(url: &str, expected: &str) {
        assert_eq!(libpq_to_tokio(url).as_deref(), Ok(expected));
    }

    #[test]
    fn the_urls_own_options_come_before_latchkeys() {
        let config = config_of("postgres://u@h/db?options=-c%20search_path%3Dlk").unwrap();
        let options = config.get_options().unwrap();
        assert_eq!(options, format!("-c search_path=lk {SESSION} {DURABLE}"));
        let config = config_of("postgres://u@h/db").unwrap();
        assert_eq!(
            config.get_options(),
            Some(format!("{SESSION} {DURABLE}").as_str())
        );
    }

    #[test]
    fn commits_are_durable_unless_the_url_chooses() {
        let options = |url: &str| config_of(url).unwrap().get_options().unwrap().to_owned();
        assert!(options("postgres://u@h/db").contains("-c synchronous_commit=on"));
        let chosen = options("postgres://u@h/db?options=-c%20synchronous_commit%3Dremote_apply");
        assert!(
            chosen.starts_with("-c synchronous_commit=remote_apply "),
            "{chosen}"
        );
        assert_eq!(chosen.matches("synchronous_commit").count(), 1, "{chosen}");
    }

    #[test]
    fn libpq_ssl_modes_that_verify_are_require() {
        check("postgres://h/db", "postgres://h/db");
        check(
            "postgres://h/db?sslmode=verify-full",
            "postgres://h/db?sslmode=require",
        );
        check(
            "postgres://h/db?user=u&sslmode=verify-ca&sslrootcert=system",
            "postgres://h/db?user=u&sslmode=require",
        );
        check(
            "postgres://h/db?sslmode=disable",
            "postgres://h/db?sslmode=disable",
        );
        let config = config_of("postgres://u@h/db?sslmode=verify-full").unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn client_certificates_are_refused_as_such_and_their_passphrase_never_shown() {
        check(
            "postgres://h/db?sslcertmode=allow&sslmode=require",
            "postgres://h/db?sslmode=require",
        );
        for url in [
            "postgres://u@h/db?sslmode=require&sslcert=/c.pem&sslkey=/k.pem",
            "postgres://u@h/db?sslmode=require&sslkey=/k.pem&sslpassword=SEKRET",
            "postgres://u@h/db?sslcertmode=require",
        ] {
            let refused = config_of(url).unwrap_err().to_string();
            assert!(refused.contains("client certificates"), "{refused}");
            assert!(!refused.contains("SEKRET"), "{refused}");
        }
    }

    #[test]
    fn plain_text_is_noticed_off_loopback_only() {
        let in_clear = |url: &str| in_clear_off_loopback(&config_of(url).unwrap());
        assert!(in_clear("postgres://u@db.example/db?sslmode=disable"));
        assert!(in_clear("postgres://u@192.0.2.7:5432/db?sslmode=disable"));
        assert!(in_clear(
            "postgres://u@localhost,db.example/db?sslmode=disable"
        ));
        for url in [
            "postgres://u@127.0.0.1/db?sslmode=disable",
            "postgres://u@localhost/db?sslmode=disable",
            "postgres://u@[::1]:5432/db?sslmode=disable",
            "postgres://u@db.example/db",
            "postgres://u@db.example/db?sslmode=require",
        ] {
            assert!(!in_clear(url), "{url}");
        }
    }

    #[test]
    fn a_root_certificate_file_names_ssl_cert_file() {
        let refused = config_of("postgres://u@h/db?sslrootcert=/etc/ca.pem").unwrap_err();
        assert!(refused.to_string().contains("SSL_CERT_FILE"), "{refused}");
    }
}
