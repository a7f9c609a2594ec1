//! `--set-image` values, with the meaning `kustomize edit set image` gives them, and the image
//! references they contain, checked against the distribution reference grammar.

/// One `images:` entry to set: fields left `None` are kept as the file has them, except that a
/// tag or a digest replaces both (`NAME=:v2` on an entry pinned by digest drops the digest, or
/// the digest would still win).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageSet {
    /// The image as the manifests name it (`registry.example.com/acme/api`).
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageSet {
    /// Parses `NAME=NEWNAME:TAG`, `NAME=:TAG`, `NAME=NEWNAME@sha256:DIGEST`,
    /// `NAME=NEWNAME:TAG@sha256:DIGEST`, `NAME=NEWNAME` or `NAME=@sha256:DIGEST`.
    pub fn parse(arg: &str) -> Result<ImageSet, String> {
        let (name, value) = arg
            .split_once('=')
            .ok_or("must be NAME=NEWNAME:TAG, NAME=:TAG or NAME=NEWNAME@sha256:DIGEST")?;
        check_name(name).map_err(|rule| format!("image name: {rule}"))?;
        let (rest, digest) = match value.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (value, None),
        };
        // A colon after the last slash starts the tag; one before it is a registry's port.
        let (new_name, new_tag) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains('/') => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(tag) = new_tag {
            check_tag(tag)?;
        }
        if !new_name.is_empty() {
            check_name(new_name).map_err(|rule| format!("new name: {rule}"))?;
        }
        if new_name.is_empty() && new_tag.is_none() && digest.is_none() {
            return Err("sets nothing: give a new name, a tag or a digest after `=`".into());
        }
        Ok(ImageSet {
            name: name.to_owned(),
            new_name: (!new_name.is_empty()).then(|| new_name.to_owned()),
            new_tag: new_tag.map(str::to_owned),
            digest,
        })
    }

    /// Whether it replaces the tag and digest pair.
    pub fn sets_version(&self) -> bool {
        self.new_tag.is_some() || self.digest.is_some()
    }

    /// `self` with the fields `over` sets taken from `over` (explicit flags over `--images-from`).
    pub fn overridden_by(&self, over: &ImageSet) -> ImageSet {
        let (new_tag, digest) = if over.sets_version() {
            (over.new_tag.clone(), over.digest.clone())
        } else {
            (self.new_tag.clone(), self.digest.clone())
        };
        ImageSet {
            name: self.name.clone(),
            new_name: over.new_name.clone().or_else(|| self.new_name.clone()),
            new_tag,
            digest,
        }
    }
}

/// An image name: an optional registry host (with port), then lowercase path components
/// separated by `/`, each made of `[a-z0-9]` runs joined by `.`, `_`, `__` or `-`s.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("must be 1 to 255 characters".into());
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 && looks_like_registry(components[0]) {
        let host = components.remove(0);
        let (host, port) = host.split_once(':').unwrap_or((host, ""));
        if !port.is_empty() && !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry port {port:?} must be a number"));
        }
        let host_ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !host_ok {
            return Err(format!("registry host {host:?} is not a host name"));
        }
    }
    for component in components {
        if !path_component_ok(component) {
            return Err(format!(
                "path component {component:?} must be lowercase letters and digits, joined by \
                 `.`, `_`, `__` or `-`"
            ));
        }
    }
    Ok(())
}

/// Docker's rule: the first component is a registry when it has a `.` or `:` or is `localhost`.
fn looks_like_registry(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost"
}

fn path_component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut run = String::new();
    for &b in bytes {
        if alnum(&b) {
            if !run.is_empty()
                && !matches!(run.as_str(), "." | "_" | "__")
                && !run.bytes().all(|s| s == b'-')
            {
                return false;
            }
            run.clear();
        } else {
            run.push(b as char);
        }
    }
    true
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1 to 128 of [A-Za-z0-9_.-], not starting with `.` or `-`"
        ))
    }
}

/// A digest: `sha256:` and 64 lowercase hex digits, or `sha512:` and 128.
pub fn check_digest(digest: &str) -> Result<(), String> {
    let ok = match digest.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64,
        Some(("sha512", hex)) => hex.len() == 128,
        _ => false,
    } && digest.split_once(':').is_some_and(|(_, hex)| {
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "digest {digest:?} must be sha256: and 64 lowercase hex digits (or sha512: and 128)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:24a0c4b4a4c0eb97a1aabb8e29f18e917d05abfe1b7a7c07857230879ce7d3d3";

    fn set(
        name: &str,
        new_name: Option<&str>,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> ImageSet {
        ImageSet {
            name: name.into(),
            new_name: new_name.map(Into::into),
            new_tag: tag.map(Into::into),
            digest: digest.map(Into::into),
        }
    }

    #[test]
    fn parses_every_form_the_issue_names() {
        assert_eq!(
            ImageSet::parse("api=registry.example.com/acme/api:1.2.3").unwrap(),
            set(
                "api",
                Some("registry.example.com/acme/api"),
                Some("1.2.3"),
                None
            )
        );
        assert_eq!(
            ImageSet::parse("api=:pr-42").unwrap(),
            set("api", None, Some("pr-42"), None)
        );
        assert_eq!(
            ImageSet::parse(&format!("api=acme/api@{DIGEST}")).unwrap(),
            set("api", Some("acme/api"), None, Some(DIGEST))
        );
        assert_eq!(
            ImageSet::parse(&format!("api=acme/api:v1@{DIGEST}")).unwrap(),
            set("api", Some("acme/api"), Some("v1"), Some(DIGEST))
        );
        assert_eq!(
            ImageSet::parse("api=acme/api").unwrap(),
            set("api", Some("acme/api"), None, None)
        );
        assert_eq!(
            ImageSet::parse(&format!("api=@{DIGEST}")).unwrap(),
            set("api", None, None, Some(DIGEST))
        );
    }

    #[test]
    fn a_registry_port_is_not_a_tag() {
        assert_eq!(
            ImageSet::parse("localhost:5000/api=localhost:5000/acme/api").unwrap(),
            set(
                "localhost:5000/api",
                Some("localhost:5000/acme/api"),
                None,
                None
            )
        );
        assert_eq!(
            ImageSet::parse("api=localhost:5000/acme/api:7").unwrap(),
            set("api", Some("localhost:5000/acme/api"), Some("7"), None)
        );
    }

    #[test]
    fn refuses_what_is_not_an_image_reference() {
        for bad in [
            "api",
            "api:v1",
            "=:v1",
            "api=",
            "api=:",
            "Api=:v1",
            "api=acme/API:v1",
            "api=:v1 ;rm -rf /",
            "api=:-v1",
            "api=acme//api:v1",
            "api=acme/api@sha256:abc",
            "api=acme/api@md5:0123456789abcdef0123456789abcdef",
            "api=../x:v1",
            "api=:v1\n",
            "api=acme/api:v1:v2",
            "api=acme/api:ü",
        ] {
            assert!(ImageSet::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long_tag = format!("api=:{}", "a".repeat(129));
        assert!(ImageSet::parse(&long_tag).is_err());
    }

    #[test]
    fn explicit_fields_win_and_a_version_replaces_both_tag_and_digest() {
        let from = set("api", Some("registry/api"), None, Some(DIGEST));
        let over = set("api", None, Some("pr-42"), None);
        assert_eq!(
            from.overridden_by(&over),
            set("api", Some("registry/api"), Some("pr-42"), None)
        );
        let only_name = set("api", Some("mirror/api"), None, None);
        assert_eq!(
            from.overridden_by(&only_name),
            set("api", Some("mirror/api"), None, Some(DIGEST))
        );
    }
}
