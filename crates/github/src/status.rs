//! What report-status keeps on a pull request: its issue comments (listed, created, edited,
//! deleted), the GitHub Deployments of an environment with their statuses, and commit statuses.
//! The shapes are GitHub's REST API (version 2022-11-28) as its OpenAPI description states them;
//! the test double validates every request and answer against that description.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use step_kit::StepError;

use crate::{Call, GitHub};

/// An issue (or pull request) comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub body: String,
    pub html_url: String,
    /// Its author's login (`<slug>[bot]` for a GitHub App).
    pub author: String,
    /// The API URL of the issue or pull request it is on (`.../issues/{number}`).
    pub issue_url: String,
}

#[derive(Deserialize)]
struct CommentJson {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    html_url: String,
    #[serde(default)]
    issue_url: String,
    user: Option<UserJson>,
}

#[derive(Deserialize)]
struct UserJson {
    login: String,
}

impl From<CommentJson> for Comment {
    fn from(c: CommentJson) -> Comment {
        Comment {
            id: c.id,
            body: c.body.unwrap_or_default(),
            html_url: c.html_url,
            author: c.user.map(|u| u.login).unwrap_or_default(),
            issue_url: c.issue_url,
        }
    }
}

/// A deployment of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Deployment {
    pub id: u64,
    pub sha: String,
    pub environment: String,
}

/// A new deployment: always transient, never production, no auto-merge, no required contexts
/// (a sandbox deploys a pull request's commit whatever its checks say; with contexts required,
/// GitHub would refuse it while our own commit status is pending).
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub sha: String,
    pub environment: String,
    pub description: String,
}

/// A deployment status's state (GitHub's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    Error,
    Failure,
    Inactive,
    InProgress,
    Queued,
    Pending,
    Success,
}

/// A deployment status, new or read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeploymentStatus {
    pub state: DeploymentState,
    #[serde(default)]
    pub environment_url: Option<String>,
    #[serde(default)]
    pub log_url: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A commit status's state (GitHub's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitState {
    Error,
    Failure,
    Pending,
    Success,
}

/// A commit status of one context, new or read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CommitStatus {
    pub context: String,
    pub state: CommitState,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub target_url: Option<String>,
}

const COMMENTS: Call = Call {
    what: "GitHub pull request comments",
    permission: "pull requests: write (or issues: write)",
};
const DEPLOYMENTS: Call = Call {
    what: "GitHub deployments",
    permission: "deployments: write",
};
const STATUSES: Call = Call {
    what: "GitHub commit statuses",
    permission: "commit statuses: write",
};
const IDENTITY: Call = Call {
    what: "GitHub user",
    permission: "a user token (GET /user), or sign in as a GitHub App",
};

impl GitHub {
    /// The login the credentials write as: `<slug>[bot]` for a GitHub App, else the token's user.
    pub async fn identity(&self) -> Result<String, StepError> {
        if let Some(slug) = &self.app_slug {
            return Ok(format!("{slug}[bot]"));
        }
        let url = format!("{}/user", self.api);
        let (user, _) = self
            .send::<UserJson>(Method::GET, &url, None, IDENTITY, false)
            .await?
            .expect("a 404 is an error");
        Ok(user.login)
    }

    /// Every comment of issue or pull request `number`, oldest first.
    pub async fn issue_comments(&self, number: u64) -> Result<Vec<Comment>, StepError> {
        let url = self.repo_url(&format!("/issues/{number}/comments?per_page=100"));
        let comments: Vec<CommentJson> = self.get_all(&url, COMMENTS).await?;
        Ok(comments.into_iter().map(Comment::from).collect())
    }

    /// Comment `id` (of any issue or pull request of the repository), or None when it is gone.
    pub async fn comment(&self, id: u64) -> Result<Option<Comment>, StepError> {
        let url = self.repo_url(&format!("/issues/comments/{id}"));
        Ok(self
            .send::<CommentJson>(Method::GET, &url, None, COMMENTS, true)
            .await?
            .map(|(c, _)| c.into()))
    }

    /// Adds reaction `content` (`+1`, `confused`, ...) to comment `id`; adding it twice is
    /// harmless (GitHub answers 200 with the existing one).
    pub async fn react(&self, id: u64, content: &str) -> Result<(), StepError> {
        let url = self.repo_url(&format!("/issues/comments/{id}/reactions"));
        let _: Value = self
            .write(Method::POST, &url, &json!({ "content": content }), COMMENTS)
            .await?;
        Ok(())
    }

    pub async fn create_comment(&self, number: u64, body: &str) -> Result<Comment, StepError> {
        let url = self.repo_url(&format!("/issues/{number}/comments"));
        let created: CommentJson = self
            .write(Method::POST, &url, &json!({ "body": body }), COMMENTS)
            .await?;
        Ok(created.into())
    }

    pub async fn update_comment(&self, id: u64, body: &str) -> Result<Comment, StepError> {
        let url = self.repo_url(&format!("/issues/comments/{id}"));
        let updated: CommentJson = self
            .write(Method::PATCH, &url, &json!({ "body": body }), COMMENTS)
            .await?;
        Ok(updated.into())
    }

    /// Deletes a comment; false when it was already gone.
    pub async fn delete_comment(&self, id: u64) -> Result<bool, StepError> {
        let url = self.repo_url(&format!("/issues/comments/{id}"));
        Ok(self
            .send::<Value>(Method::DELETE, &url, None, COMMENTS, true)
            .await?
            .is_some())
    }

    /// The deployments of `environment` (of commit `sha` when given), newest first.
    pub async fn deployments(
        &self,
        environment: &str,
        sha: Option<&str>,
    ) -> Result<Vec<Deployment>, StepError> {
        let mut query = vec![("environment", environment), ("per_page", "100")];
        if let Some(sha) = sha {
            query.push(("sha", sha));
        }
        let url = reqwest::Url::parse_with_params(&self.repo_url("/deployments"), &query)
            .map_err(|e| StepError::invalid(format!("--github-api-url: {e}")))?;
        self.get_all(url.as_str(), DEPLOYMENTS).await
    }

    pub async fn create_deployment(&self, new: &NewDeployment) -> Result<Deployment, StepError> {
        let body = json!({
            "ref": new.sha,
            "task": "deploy",
            "auto_merge": false,
            "required_contexts": [],
            "environment": new.environment,
            "description": new.description,
            "transient_environment": true,
            "production_environment": false,
        });
        self.write(
            Method::POST,
            &self.repo_url("/deployments"),
            &body,
            DEPLOYMENTS,
        )
        .await
    }

    /// The deployment's newest status, if it has one.
    pub async fn latest_deployment_status(
        &self,
        deployment: u64,
    ) -> Result<Option<DeploymentStatus>, StepError> {
        let url = self.repo_url(&format!("/deployments/{deployment}/statuses?per_page=1"));
        let (statuses, _) = self
            .send::<Vec<DeploymentStatus>>(Method::GET, &url, None, DEPLOYMENTS, false)
            .await?
            .expect("a 404 is an error");
        Ok(statuses.into_iter().next())
    }

    /// Adds a status to a deployment. `auto_inactive` (GitHub's default) marks the environment's
    /// older deployments inactive on a success.
    pub async fn create_deployment_status(
        &self,
        deployment: u64,
        status: &DeploymentStatus,
    ) -> Result<(), StepError> {
        let mut body = json!({ "state": status.state, "auto_inactive": true });
        for (key, value) in [
            ("environment_url", &status.environment_url),
            ("log_url", &status.log_url),
            ("description", &status.description),
        ] {
            if let Some(value) = value {
                body[key] = Value::String(value.clone());
            }
        }
        let url = self.repo_url(&format!("/deployments/{deployment}/statuses"));
        self.write::<Value>(Method::POST, &url, &body, DEPLOYMENTS)
            .await
            .map(drop)
    }

    /// The newest status of `context` on commit `sha`.
    pub async fn commit_status(
        &self,
        sha: &str,
        context: &str,
    ) -> Result<Option<CommitStatus>, StepError> {
        #[derive(Deserialize)]
        struct Combined {
            statuses: Vec<CommitStatus>,
        }
        let url = self.repo_url(&format!("/commits/{sha}/status?per_page=100"));
        let (combined, _) = self
            .send::<Combined>(Method::GET, &url, None, STATUSES, false)
            .await?
            .expect("a 404 is an error");
        Ok(combined.statuses.into_iter().find(|s| s.context == context))
    }

    pub async fn create_commit_status(
        &self,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), StepError> {
        let mut body = json!({ "state": status.state, "context": status.context });
        if let Some(description) = &status.description {
            body["description"] = Value::String(description.clone());
        }
        if let Some(target) = &status.target_url {
            body["target_url"] = Value::String(target.clone());
        }
        let url = self.repo_url(&format!("/statuses/{sha}"));
        self.write::<Value>(Method::POST, &url, &body, STATUSES)
            .await
            .map(drop)
    }
}
