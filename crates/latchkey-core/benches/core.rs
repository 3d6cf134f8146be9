//! Benchmarks of latchkey-core (filled in below).
fn main() {}
