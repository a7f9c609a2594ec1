//! Signing in as a GitHub App: a JWT signed with the App's private key (RS256, valid ten minutes
//! at most, issued a minute in the past against clock drift, as GitHub's "Generating a JSON Web
//! Token for a GitHub App" asks), then an installation access token for the one repository, which
//! every later call uses.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use step_kit::{Secret, StepError};

use crate::{Call, GitHub};

pub(crate) struct App {
    id: u64,
    key: EncodingKey,
}

#[derive(Serialize)]
struct Claims {
    iat: u64,
    exp: u64,
    iss: String,
}

impl App {
    pub(crate) fn new(id: u64, private_key_pem: &Secret) -> Result<App, StepError> {
        let key = EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes()).map_err(|e| {
            // The error names the PEM problem, never the key.
            StepError::precondition(format!(
                "--github-app-key is not an RSA private key in PEM: {e}"
            ))
            .with_hint("use the .pem file GitHub generated for the App")
        })?;
        Ok(App { id, key })
    }

    /// A JWT for the App's own endpoints.
    fn jwt(&self) -> Result<Secret, StepError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iat: now.saturating_sub(60),
            exp: now + 9 * 60,
            iss: self.id.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| StepError::unexpected(format!("cannot sign the GitHub App's JWT: {e}")))
    }
}

const APP_CALL: Call = Call {
    what: "GitHub App sign-in",
    permission: "the App's current private key (--github-app-key) and its installation",
};

impl GitHub {
    /// Exchanges the App's JWT for an installation token restricted to this repository.
    pub(crate) async fn sign_in_as_installation(
        &mut self,
        app: App,
        installation: Option<u64>,
    ) -> Result<(), StepError> {
        #[derive(Deserialize)]
        struct AppJson {
            slug: String,
        }
        #[derive(Deserialize)]
        struct InstallationJson {
            id: u64,
        }
        #[derive(Deserialize)]
        struct TokenJson {
            token: String,
        }
        let jwt = app.jwt()?;
        let url = format!("{}/app", self.api);
        let (me, _) = self
            .send_as::<AppJson>(&jwt, Method::GET, &url, None, APP_CALL, false)
            .await?
            .expect("a 404 is an error");
        let installation = match installation {
            Some(id) => id,
            None => {
                let url = self.repo_url("/installation");
                let found = self
                    .send_as::<InstallationJson>(&jwt, Method::GET, &url, None, APP_CALL, true)
                    .await?;
                match found {
                    Some((installation, _)) => installation.id,
                    None => return Err(StepError::precondition(format!(
                        "GitHub App {} ({}) is not installed on {}",
                        app.id,
                        me.slug,
                        self.repository()
                    ))
                    .with_hint(
                        "install the App on the repository, or pass --github-app-installation-id",
                    )),
                }
            }
        };
        let url = format!(
            "{}/app/installations/{installation}/access_tokens",
            self.api
        );
        let body = json!({ "repositories": [self.name] });
        let (token, _) = self
            .send_as::<TokenJson>(&jwt, Method::POST, &url, Some(&body), APP_CALL, false)
            .await?
            .expect("a 404 is an error");
        tracing::info!(
            "signed in as GitHub App {} ({}), installation {installation}",
            app.id,
            me.slug
        );
        self.token = Secret::new(token.token);
        self.app_slug = Some(me.slug);
        Ok(())
    }
}
