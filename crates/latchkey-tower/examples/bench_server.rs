//! The benchmark server of `bench/layer.sh` (being written).

fn main() {}
