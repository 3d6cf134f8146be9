//! The value parser of a user's or a group's name or id: a key's full text given in its
//! place is refused before any request, so that a secret pasted where a name goes never
//! leaves the machine (the daemon would never carry it back nor log it, but it would have
//! travelled), nor is it echoed in the error.

use std::ffi::OsStr;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use latchkey_core::ApiKey;
use latchkey_core::limits::MAX_PRINCIPAL_NAME_BYTES;

/// Parses a user's or a group's name or id (`#[arg(value_parser = PrincipalRef)]`).
///
/// Refuses a key (or one with a character mistyped) and any text longer than the longest
/// name, which no user or group could be known by; neither is shown in the error. An empty
/// value passes: `--groups ''` removes them all.
#[derive(Debug, Clone, Copy)]
pub struct PrincipalRef;

impl TypedValueParser for PrincipalRef {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let what = arg.map_or_else(|| "the value".to_owned(), |arg| format!("`{arg}`"));
        let refuse = |why: String| Err(cmd.clone().error(ErrorKind::ValueValidation, why));
        let Some(text) = value.to_str() else {
            return refuse(format!("{what} is not UTF-8: give a name or an id"));
        };
        if ApiKey::has_its_shape(text) {
            refuse(format!(
                "{what} takes a name or an id, and that is a key's full text: it was not \
                 sent (see `latchkey users list` or `latchkey groups list`)"
            ))
        } else if text.len() > MAX_PRINCIPAL_NAME_BYTES {
            refuse(format!(
                "{what} takes a name or an id, and that is {} bytes, longer than any name \
                 ({MAX_PRINCIPAL_NAME_BYTES}): it was not sent",
                text.len()
            ))
        } else {
            Ok(text.to_owned())
        }
    }
}
