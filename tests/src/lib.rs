//! Helpers shared by the cross-crate and fault tests in `tests/tests/`.
