//! Workspace-level checks live in this package's tests (see `manifests.rs`).
