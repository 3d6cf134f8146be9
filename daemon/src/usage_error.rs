//! A command line clap refuses, said as the user set it up: a value from an environment
//! variable is named as such, and a flag whose value came from the environment is not shown
//! in the usage line as if it had to be typed (`LATCHKEY_ADMIN_KEY` is the advised way).

use std::ffi::OsString;

use clap::CommandFactory;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::cli::Cli;

/// Prints `error` as clap would, mended as the module says, and exits with its code.
pub fn exit(error: clap::Error) -> ! {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        error.exit()
    }
    let from_environment =
        |long: &str| variable(&Cli::command(), long).filter(|v| std::env::var_os(v).is_some());
    let mut text = without_environment_flags(&error.render().to_string(), &argv, from_environment);
    if let Some(variable) = refused_from_environment(&error, &argv) {
        text.push_str(&format!(
            "(the value came from the environment variable {variable})\n"
        ));
    }
    // A key given to the wrong flag by mistake is not printed back.
    eprint!("{}", latchkey_core::without_keys(&text));
    std::process::exit(error.exit_code())
}

/// For a value clap refused that came from the environment rather than `argv`: the
/// variable's name, for the error to say where to look (clap names the flag alone).
fn refused_from_environment(error: &clap::Error, argv: &[OsString]) -> Option<String> {
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    from_environment(argv, long)
}

/// The environment variable `--long`'s value came from: the flag is not in `argv` and its
/// variable is set. For a value checked after the parser, to name where it came from.
pub(crate) fn from_environment(argv: &[OsString], long: &str) -> Option<String> {
    if typed(argv, long) {
        return None;
    }
    variable(&Cli::command(), long).filter(|v| std::env::var_os(v).is_some())
}

/// `rendered`'s usage line without the flags whose value came from the environment
/// (`from_environment` names a flag's variable when it is set) and not from `argv`.
fn without_environment_flags(
    rendered: &str,
    argv: &[OsString],
    from_environment: impl Fn(&str) -> Option<String>,
) -> String {
    let mut lines = Vec::new();
    for line in rendered.split_inclusive('\n') {
        let Some(usage) = line.strip_prefix("Usage: ") else {
            lines.push(line.to_owned());
            continue;
        };
        let words: Vec<&str> = usage.split(' ').collect();
        let mut kept = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let flag = words[i].strip_prefix("--").filter(|long| !long.is_empty());
            let placeholder = words.get(i + 1).is_some_and(|w| w.starts_with('<'));
            if let Some(long) = flag
                && !typed(argv, long)
                && from_environment(long).is_some()
            {
                i += if placeholder { 2 } else { 1 };
                continue;
            }
            kept.push(words[i]);
            i += 1;
        }
        lines.push(format!("Usage: {}", kept.join(" ")));
    }
    lines.concat()
}

/// Whether `--long` (or `--long=…`) is on the command line.
fn typed(argv: &[OsString], long: &str) -> bool {
    argv.iter().any(|a| {
        a.to_str()
            .and_then(|a| a.strip_prefix("--"))
            .is_some_and(|a| a == long || a.strip_prefix(long).is_some_and(|v| v.starts_with('=')))
    })
}

/// The environment variable of the flag `--long`, in `command` or any of its subcommands.
fn variable(command: &clap::Command, long: &str) -> Option<String> {
    let arg = command.get_arguments().find(|a| a.get_long() == Some(long));
    arg.and_then(clap::Arg::get_env)
        .map(|name| name.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|c| variable(c, long)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_line_leaves_out_flags_given_by_the_environment() {
        let rendered = "error: the argument '--meta <JSON>' cannot be used with '--clear-meta'\n\n\
                        Usage: latchkey keys update --meta <JSON> --url <URL> --admin-key <KEY> <KEY>\n\n\
                        For more information, try '--help'.\n";
        let argv: Vec<OsString> = [
            "latchkey",
            "keys",
            "update",
            "k",
            "--meta",
            "{}",
            "--clear-meta",
        ]
        .map(OsString::from)
        .to_vec();
        let env = |long: &str| matches!(long, "url" | "admin-key").then(|| long.to_owned());
        let mended = without_environment_flags(rendered, &argv, env);
        assert!(
            mended.contains("Usage: latchkey keys update --meta <JSON> <KEY>\n"),
            "{mended}"
        );
        assert!(mended.starts_with("error: the argument"), "{mended}");
        // Typed on the command line: kept.
        let mut typed = argv.clone();
        typed.push("--url=http://x".into());
        let kept = without_environment_flags(rendered, &typed, env);
        assert!(kept.contains("--url <URL> <KEY>"), "{kept}");
        assert_eq!(
            without_environment_flags(rendered, &argv, |_| None),
            rendered
        );
    }
}
