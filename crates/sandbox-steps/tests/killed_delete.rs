//! A deletion killed (SIGKILL) at a random point of any of its steps, 20 times: the next sweep
//! finds what is left as an orphan, the deletion run again removes it, and the sweep after that
//! finds nothing. The steps run as delete-sandbox runs them, in its order (delete-argocd-app,
//! drop-db, purge-secrets, cleanup-branch; the namespace and Terraform parts are Argo's and
//! Terraform's, run on the real cluster by `make e2e`), through the image's multicall binary,
//! against the harness's git server, PostgreSQL, OpenBao and the GitHub double.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use testkit::{GitHubDouble, GitServer, OpenBao, Postgres};

const GIT_TOKEN: &str = "kill-git-token";
const GITHUB_TOKEN: &str = "kill-github-token";
const TRIALS: u64 = 20;

struct World {
    git: GitServer,
    github: GitHubDouble,
    pg: Postgres,
    bao: OpenBao,
}

/// A small xorshift generator: the seed is printed, so a failing trial can be replayed with
/// `KILL_SEED`.
struct Random(u64);

impl Random {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

impl World {
    fn step(&self, step: &str, args: &[String]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandbox-steps"));
        cmd.arg(step)
            .args(args)
            .env_clear()
            .env("GIT_TOKEN", GIT_TOKEN)
            .env("GITHUB_TOKEN", GITHUB_TOKEN)
            .env("ADMIN_URL", self.pg.url("postgres"))
            .env("VAULT_TOKEN", self.bao.root_token())
            .env("VAULT_ADDR", self.bao.addr())
            .env("SBX_LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// delete-sandbox's steps for sandbox `pr`, in its order.
    fn delete_steps(&self, pr: u64) -> Vec<(&'static str, Vec<String>)> {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let env = format!("sbx-pr-{pr}");
        vec![
            (
                "delete-argocd-app",
                s(&[
                    "--repo",
                    &self.git.url("gitops"),
                    "--path",
                    "apps/sandboxes",
                    "--name",
                    &env,
                    "--allow-protected-branch",
                    "--git-token",
                    "env:GIT_TOKEN",
                ]),
            ),
            (
                "drop-db",
                s(&[
                    "--admin-url",
                    "env:ADMIN_URL",
                    "--database",
                    &format!("sbx_pr_{pr}"),
                ]),
            ),
            (
                "purge-secrets",
                s(&[
                    "--path",
                    &format!("sandboxes/{env}"),
                    "--vault-token",
                    "env:VAULT_TOKEN",
                ]),
            ),
            (
                "cleanup-branch",
                s(&[
                    "--repo",
                    &self.git.url("infra"),
                    "--branch",
                    &env,
                    "--git-token",
                    "env:GIT_TOKEN",
                    "--github-repo",
                    "acme/platform",
                    "--github-token",
                    "env:GITHUB_TOKEN",
                    "--github-api-url",
                    &self.github.url(),
                ]),
            ),
        ]
    }

    /// A whole sandbox, made by the steps create-sandbox runs where they exist here.
    fn create(&self, pr: u64) {
        let env = format!("sbx-pr-{pr}");
        let run = |step: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let out = self.step(step, &args).output().unwrap();
            assert!(
                out.status.success(),
                "{step}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            "create-branch",
            &[
                "--repo",
                &self.git.url("infra"),
                "--branch",
                &env,
                "--git-token",
                "env:GIT_TOKEN",
            ],
        );
        run(
            "create-argocd-app",
            &[
                "--repo",
                &self.git.url("gitops"),
                "--allow-protected-branch",
                "--path",
                "apps/sandboxes",
                "--name",
                &env,
                "--source-repo",
                &self.git.url("infra"),
                "--source-path",
                "kustomize/environments/sandbox",
                "--target-revision",
                &env,
                "--dest-namespace",
                &format!("apps-{env}"),
                "--pr-number",
                &pr.to_string(),
                "--git-token",
                "env:GIT_TOKEN",
            ],
        );
        // The database and its role as restore-db leaves them; the owner's secret.
        self.pg.psql(
            "postgres",
            &format!(
                "CREATE ROLE sbx_pr_{pr} LOGIN; COMMENT ON ROLE sbx_pr_{pr} IS '{}'",
                pg_admin::ROLE_MARKER
            ),
        );
        self.pg.psql(
            "postgres",
            &format!("CREATE DATABASE sbx_pr_{pr} OWNER sbx_pr_{pr}"),
        );
        self.pg.psql(
            &format!("sbx_pr_{pr}"),
            "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 50000) g",
        );
        for secret in ["db", "app/api-key"] {
            self.bao.api(
                "POST",
                &format!("secret/data/sandboxes/{env}/{secret}"),
                Some(serde_json::json!({"data": {"value": "x"}})),
            );
        }
    }

    /// The sweep's decisions about sandbox `pr`: None when nothing of it is found.
    fn swept(&self, pr: u64) -> Option<(String, String)> {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = [
            "--github-repo",
            "acme/platform",
            "--github-token",
            "env:GITHUB_TOKEN",
            "--github-api-url",
            &self.github.url(),
            "--inventory",
            "branches,applications,databases,secrets",
            "--infra-repo",
            &self.git.url("infra"),
            "--apps-repo",
            &self.git.url("gitops"),
            "--git-token",
            "env:GIT_TOKEN",
            "--admin-url",
            "env:ADMIN_URL",
            "--vault-token",
            "env:VAULT_TOKEN",
            "--outputs-dir",
            dir.path().to_str().unwrap(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let out = self.step("sweep-sandboxes", &args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "sweep: {text}");
        let deletes: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("deletes")).unwrap())
                .unwrap();
        let row = text
            .lines()
            .find(|l| l.contains(&format!("sbx-pr-{pr} ")))
            .map(str::to_owned);
        match row {
            None => None,
            Some(row) => {
                let listed = deletes
                    .iter()
                    .any(|d| d["pr-number"].as_str() == Some(pr.to_string().as_str()));
                assert!(listed, "sbx-pr-{pr} found but not to be deleted: {row}");
                Some((row, text))
            }
        }
    }
}

#[test]
fn a_deletion_killed_anywhere_is_finished_by_the_next_sweep() {
    let git = GitServer::start(GIT_TOKEN);
    git.create_repo(
        "infra",
        &[(
            "kustomize/environments/sandbox/kustomization.yaml",
            "resources: []\n",
        )],
    );
    git.create_repo("gitops", &[("apps/sandboxes/README.md", "sandboxes\n")]);
    let world = World {
        git,
        github: GitHubDouble::start("acme", "platform", GITHUB_TOKEN),
        pg: Postgres::start(),
        bao: OpenBao::start(),
    };
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
                | 1
        });
    eprintln!("KILL_SEED={seed}");
    let mut random = Random(seed);
    // How long each step takes here (the shorter of two runs, the first one warms the caches): a
    // kill lands within that span, in the middle of its work.
    let mut spans = vec![u64::MAX; 4];
    for pr in [98, 99] {
        world.create(pr);
        world
            .github
            .add_pull(pr, "closed", &format!("feature/{pr}"));
        for (i, (step, args)) in world.delete_steps(pr).into_iter().enumerate() {
            let started = Instant::now();
            let out = world.step(step, &args).output().unwrap();
            assert!(
                out.status.success(),
                "{step}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            spans[i] = spans[i].min(started.elapsed().as_millis() as u64);
        }
    }
    eprintln!("the deletion's steps take {spans:?} ms");
    let mut killed_at = Vec::new();
    let mut mid_step = 0;
    for trial in 0..TRIALS {
        let pr = 100 + trial;
        world.create(pr);
        // The pull request is closed: the deletion starts, and dies.
        world
            .github
            .add_pull(pr, "closed", &format!("feature/{pr}"));
        let steps = world.delete_steps(pr);
        let victim = random.next(steps.len() as u64) as usize;
        let delay = Duration::from_millis(random.next(spans[victim].max(1)));
        for (step, args) in &steps[..victim] {
            let out = world.step(step, args).output().unwrap();
            assert!(
                out.status.success(),
                "{step}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (step, args) = &steps[victim];
        let mut child = world.step(step, args).spawn().unwrap();
        let started = Instant::now();
        std::thread::sleep(delay);
        let finished_first = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        if !finished_first {
            mid_step += 1;
        }
        killed_at.push(format!(
            "{step} after {} ms{}",
            started.elapsed().as_millis(),
            if finished_first {
                " (had finished)"
            } else {
                ""
            }
        ));
        // The next sweep finds the rest (the step killed before its last change leaves
        // something; killed after, nothing of the earlier steps' part is left).
        let found = world.swept(pr);
        assert!(
            found.is_some() || victim == steps.len() - 1,
            "trial {trial}: killed in {step}, and the sweep finds nothing though later steps never ran"
        );
        // The sweep's delete-sandbox runs the steps again: each finishes its part.
        for (step, args) in &steps {
            let out = world.step(step, args).output().unwrap();
            assert!(
                out.status.success(),
                "trial {trial} (seed {seed}): {step} after a kill in {}: {}",
                killed_at.last().unwrap(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some((row, text)) = world.swept(pr) {
            panic!("trial {trial} (seed {seed}): left after the second deletion: {row}\n{text}");
        }
    }
    eprintln!(
        "killed {mid_step} of {TRIALS} in the middle of a step: {}",
        killed_at.join("; ")
    );
    assert!(
        mid_step >= TRIALS / 2,
        "only {mid_step} kills landed in the middle of a step (seed {seed})"
    );
}
