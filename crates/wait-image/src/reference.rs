//! Image references as the OCI distribution spec names them: `REGISTRY/REPOSITORY:TAG` or
//! `REGISTRY/REPOSITORY@sha256:DIGEST`, with the registry always written out (a sandbox never
//! guesses Docker Hub).

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written.
    pub registry: String,
    pub repository: String,
    /// The tag or the digest (`sha256:...`).
    pub reference: String,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, String> {
        let (registry, rest) = text
            .split_once('/')
            .ok_or("expected REGISTRY/REPOSITORY:TAG (the registry written out)")?;
        let host = registry.split(':').next().unwrap_or_default();
        if !(host.contains('.') || host == "localhost" || registry.contains(':')) {
            return Err(format!(
                "{registry:?} is not a registry host (REGISTRY/REPOSITORY:TAG, e.g. \
                 europe-docker.pkg.dev/acme/apps/web:sha-1a2b3c4)"
            ));
        }
        if !registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(format!("{registry:?}: not a host[:port]"));
        }
        let (repository, reference) = match rest.split_once('@') {
            Some((repository, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or("a digest is sha256:<64 hex digits>")?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err("a digest is sha256:<64 hex digits>".into());
                }
                (repository, digest)
            }
            None => rest
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .ok_or("a tag (:TAG) or a digest (@sha256:...) is required")?,
        };
        check_repository(repository)?;
        if !reference.starts_with("sha256:") {
            check_tag(reference)?;
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            reference: reference.to_owned(),
        })
    }

    /// The registry's API base (`https://host/v2/`); Docker Hub's API lives elsewhere than its
    /// name.
    pub fn api_base(&self, plain_http: bool) -> String {
        let host = match self.registry.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        };
        let scheme = if plain_http { "http" } else { "https" };
        format!("{scheme}://{host}/v2/")
    }

    /// `REGISTRY/REPOSITORY@DIGEST`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.registry, self.repository)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let separator = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{separator}{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// The distribution spec's repository name: path components of `[a-z0-9]+` joined by `.`, `_`,
/// `__` or `-`s, separated by `/`.
fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() || repository.len() > 255 {
        return Err("the repository is 1 to 255 characters".into());
    }
    for component in repository.split('/') {
        let bytes = component.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let ok = !bytes.is_empty()
            && alnum(&bytes[0])
            && alnum(&bytes[bytes.len() - 1])
            && bytes
                .iter()
                .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
            && !component.contains("..")
            && !component.contains("___");
        if !ok {
            return Err(format!(
                "repository component {component:?}: lower-case letters and digits, joined by . _ -"
            ));
        }
    }
    Ok(())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?}: up to 128 of A-Z a-z 0-9 _ . - (not starting with . or -)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("europe-docker.pkg.dev/acme/apps/web:sha-1a2b3c4").unwrap();
        assert_eq!(r.registry, "europe-docker.pkg.dev");
        assert_eq!(r.repository, "acme/apps/web");
        assert_eq!(r.reference, "sha-1a2b3c4");
        assert_eq!(
            r.to_string(),
            "europe-docker.pkg.dev/acme/apps/web:sha-1a2b3c4"
        );
        let local = Reference::parse("127.0.0.1:5000/web:1").unwrap();
        assert_eq!(local.api_base(true), "http://127.0.0.1:5000/v2/");
        let digest = format!("ghcr.io/acme/web@sha256:{}", "a".repeat(64));
        assert_eq!(Reference::parse(&digest).unwrap().to_string(), digest);
        assert_eq!(
            Reference::parse("docker.io/library/nginx:1")
                .unwrap()
                .api_base(false),
            "https://registry-1.docker.io/v2/"
        );
        for bad in [
            "nginx:1",
            "web",
            "ghcr.io/acme/web",
            "ghcr.io/Acme/web:1",
            "ghcr.io/acme/web:-x",
            "ghcr.io/acme/web@sha256:abc",
            "ghcr.io/../x:1",
            "ghcr.io/acme/web:;rm -rf /",
            "ghcr.io/acme/web:x\u{202e}",
            &format!("ghcr.io/acme/web:{}", "a".repeat(200)),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
