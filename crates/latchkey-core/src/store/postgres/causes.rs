//! A driver or pool error as the store reports it: with what the server said.
//!
//! tokio-postgres displays a server's error as "db error" alone, keeping the server's
//! message ("too many connections", "cannot execute INSERT in a read-only transaction",
//! "canceling statement due to lock timeout") in its source, which a log line's `%error`
//! never shows: an operator had to read the server's log to learn which failure it was.

use std::error::Error;
use std::fmt;

/// `E`, displayed with its whole chain of sources ("db error: ERROR: …"), and with no
/// source of its own. (A `StoreError` that holds it displays it and also gives it as its
/// source, so a reader that walks the chain, anyhow's `{:#}`, meets its text twice: the
/// CLI's `output::error_line` leaves out a cause the line already holds.)
#[derive(Debug)]
pub(crate) struct WithCauses<E>(pub(crate) E);

impl<E: Error> fmt::Display for WithCauses<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            // A cause its error already shows (the pool's "…: db error" over the
            // driver's "db error") is said once.
            let text = cause.to_string();
            if !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            source = cause.source();
        }
        // What to do about the one failure an operator cannot read off the server's log.
        if line.contains("invalid peer certificate") {
            line.push_str(
                " (a private CA's or a self-signed server certificate: trust it with \
                 SSL_CERT_FILE=FILE, a PEM file holding the CA)",
            );
        }
        f.write_str(&line)
    }
}

impl<E: Error> Error for WithCauses<E> {}

/// The driver's error inside a store error's cause, if that is what it is.
pub(crate) fn driver_error<'a>(
    cause: &'a (dyn Error + Send + Sync + 'static),
) -> Option<&'a tokio_postgres::Error> {
    cause
        .downcast_ref::<WithCauses<tokio_postgres::Error>>()
        .map(|said| &said.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("db error")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("ERROR: cannot execute INSERT in a read-only transaction")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }
    impl Error for Inner {}

    /// A pool's error that shows its cause's text and gives it as its source too.
    #[derive(Debug)]
    struct Pool(Outer);
    impl fmt::Display for Pool {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Error occurred while creating a new object: {}", self.0)
        }
    }
    impl Error for Pool {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_shown_already_is_said_once() {
        assert_eq!(
            WithCauses(Pool(Outer(Inner))).to_string(),
            "Error occurred while creating a new object: db error: ERROR: cannot execute \
             INSERT in a read-only transaction"
        );
    }

    #[derive(Debug)]
    struct Untrusted;
    impl fmt::Display for Untrusted {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("error performing TLS handshake: invalid peer certificate: UnknownIssuer")
        }
    }
    impl Error for Untrusted {}

    #[test]
    fn a_certificate_that_does_not_verify_names_ssl_cert_file() {
        let said = WithCauses(Untrusted).to_string();
        assert!(
            said.ends_with("trust it with SSL_CERT_FILE=FILE, a PEM file holding the CA)"),
            "{said}"
        );
        assert!(
            !WithCauses(Outer(Inner))
                .to_string()
                .contains("SSL_CERT_FILE")
        );
    }

    #[test]
    fn it_says_what_the_server_said_once() {
        let said = WithCauses(Outer(Inner));
        assert_eq!(
            said.to_string(),
            "db error: ERROR: cannot execute INSERT in a read-only transaction"
        );
        assert!(said.source().is_none());
    }
}
