//! The `latchkey` binary (work in progress: see issue 4).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("latchkey: the daemon and CLI are not built yet")
}
