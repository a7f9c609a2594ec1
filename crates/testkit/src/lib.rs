//! The test harness: real servers started on loopback by the tests themselves, so `make test` works
//! on a fresh machine, and doubles (named as such) for the APIs no real server can serve here.
//!
//! - [`GitServer`]: bare repositories over smart HTTP (`git http-backend`) with basic auth.
//! - [`SshGitServer`]: bare repositories over SSH, served by OpenSSH's `sshd`.
//! - [`Postgres`]: a throwaway PostgreSQL cluster (`initdb` + `pg_ctl`).
//! - [`FakeGcs`]: fake-gcs-server (JSON API), reached like the Google SDKs reach an emulator.
//! - [`OpenBao`]: the Vault-compatible server in dev mode, with Kubernetes auth against the
//!   [`TokenReviewDouble`].
//! - [`GitHubDouble`]: the GitHub REST API's pull-request listing, pagination and rate limits.
//! - [`KubeApiServer`]: the real Kubernetes API (etcd, kube-apiserver, kube-controller-manager) built
//!   by `cluster/build.sh`, with RBAC, admission policies and service-account tokens.
//! - [`KubeApiDouble`]: the Kubernetes API for Argo Workflows (get, list, watch, 410 Gone, RBAC).
//! - [`FaultProxy`]: an HTTP proxy injecting 503, 429 and dropped connections, for retry tests.
//! - [`HttpServer`]: the real HTTP/1.1 server the git server and every API double run on.
//!
//! Every server picks a free port, waits until it is ready (with a timeout), is killed when dropped,
//! and prints its log when the test fails. A missing server binary fails the test with an install
//! hint: nothing is skipped silently.

mod fault;
mod gcs;
mod git;
mod github;
mod http;
mod kube;
mod kube_apiserver;
mod nats;
mod node;
mod openapi;
mod openbao;
mod postgres;
mod process;
mod registry;
mod ssh;
mod step_run;

pub use fault::{FaultConfig, FaultCounts, FaultProxy};
pub use gcs::FakeGcs;
pub use git::{git_binary, GitServer};
pub use github::{Comment, Deployment, Fault, GitHubDouble, PullRequest, TOKEN_USER};
pub use http::{HttpRequest, HttpResponse, HttpServer};
pub use kube::KubeApiDouble;
pub use kube_apiserver::{
    cluster_cache, cluster_tool, split_yaml, ApiClient, KubeApiServer, KubeApiServerOptions,
};
pub use nats::NatsServer;
pub use node::{build_image, Node, PAUSE_IMAGE};
pub use openapi::{description_path as github_description_path, OpenApi};
pub use openbao::{OpenBao, TokenReviewDouble};
pub use postgres::Postgres;
pub use process::{at_exit, find_binary, free_port, gzip, wait_for_http_ok, ServerProcess};
pub use registry::{OciRegistry, RegistryAuth};
pub use ssh::SshGitServer;
pub use step_run::StepRun;
