//! Helpers for the black-box tests live in `it/`.
