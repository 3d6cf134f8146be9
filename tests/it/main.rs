//! Black-box tests of the `latchkey` binary.
