//! `gs://BUCKET[/PREFIX]` locations.

use std::fmt;
use std::str::FromStr;

use step_kit::escape_untrusted;

/// A bucket and a prefix inside it. The prefix is a folder: empty (the whole bucket) or ending in
/// `/`, so `gs://b/docs` means the objects under `docs/`, never `docs2/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsUrl {
    pub bucket: String,
    /// `""` or `folder/` (`folder/sub/`): the part of every object name under this location.
    pub prefix: String,
}

impl GcsUrl {
    /// The full object name of `relative` (a name under this prefix).
    pub fn object(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }

    /// Whether the two locations share objects: the same bucket, and one prefix inside the other
    /// (the empty prefix holds every other one).
    pub fn overlaps(&self, other: &GcsUrl) -> bool {
        self.bucket == other.bucket
            && (self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix))
    }
}

impl FromStr for GcsUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix("gs://") else {
            return Err(format!(
                "{} is not a gs:// URL (expected gs://BUCKET or gs://BUCKET/PREFIX)",
                escape_untrusted(s)
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        naming::check_bucket_name(bucket)
            .map_err(|rule| format!("bucket {}: {rule}", escape_untrusted(bucket)))?;
        let mut prefix = prefix.trim_start_matches('/').to_owned();
        if prefix.chars().any(|c| c.is_control()) {
            return Err(format!(
                "prefix {}: control characters are refused",
                escape_untrusted(&prefix)
            ));
        }
        if prefix.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(format!(
                "prefix {}: . and .. segments are refused",
                escape_untrusted(&prefix)
            ));
        }
        if prefix.len() > 1024 {
            return Err("prefix longer than 1024 bytes (GCS object name limit)".into());
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(GcsUrl {
            bucket: bucket.to_owned(),
            prefix,
        })
    }
}

/// `gs://BUCKET/NAME` (one object) or `gs://BUCKET/PREFIX/` (what is under a folder): a name
/// that ends in `/`, or no name at all, is a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Object { bucket: String, name: String },
    Prefix(GcsUrl),
}

impl FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url: GcsUrl = s.parse()?;
        if s.ends_with('/') || url.prefix.is_empty() {
            return Ok(Location::Prefix(url));
        }
        let name = url.prefix.trim_end_matches('/').to_owned();
        Ok(Location::Object {
            bucket: url.bucket,
            name,
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Object { bucket, name } => write!(f, "gs://{bucket}/{name}"),
            Location::Prefix(url) => url.fmt(f),
        }
    }
}

impl fmt::Display for GcsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gs://{}/{}", self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> GcsUrl {
        s.parse().unwrap()
    }

    #[test]
    fn buckets_and_prefixes_parse() {
        assert_eq!(
            url("gs://acme-int"),
            GcsUrl {
                bucket: "acme-int".into(),
                prefix: "".into()
            }
        );
        assert_eq!(url("gs://acme-int/").prefix, "");
        assert_eq!(url("gs://acme-int/docs").prefix, "docs/");
        assert_eq!(url("gs://acme-int/docs/2024/").prefix, "docs/2024/");
        assert_eq!(url("gs://acme-int/docs").object("a b.pdf"), "docs/a b.pdf");
        assert_eq!(url("gs://acme-int/docs").to_string(), "gs://acme-int/docs/");
    }

    #[test]
    fn bad_urls_are_refused() {
        for bad in [
            "acme-int/docs",
            "s3://acme-int",
            "gs://",
            "gs://Acme",
            "gs://ab",
            "gs://goog-x",
            "gs://acme/../x",
            "gs://acme/a/./b",
            "gs://acme/a\nb",
            "https://storage.googleapis.com/acme",
        ] {
            assert!(bad.parse::<GcsUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn locations_are_objects_unless_they_end_in_a_slash() {
        let object = |bucket: &str, name: &str| Location::Object {
            bucket: bucket.into(),
            name: name.into(),
        };
        let loc = |s: &str| s.parse::<Location>().unwrap();
        assert_eq!(
            loc("gs://acme/backups/db.sql.gz"),
            object("acme", "backups/db.sql.gz")
        );
        assert_eq!(
            loc("gs://acme/backups/"),
            Location::Prefix(url("gs://acme/backups/"))
        );
        assert_eq!(loc("gs://acme"), Location::Prefix(url("gs://acme")));
        assert_eq!(loc("gs://acme/a/b.sql").to_string(), "gs://acme/a/b.sql");
        assert!("gs://acme/../x.sql".parse::<Location>().is_err());
    }

    #[test]
    fn overlap_is_same_bucket_and_nested_prefixes() {
        let overlaps = |a: &str, b: &str| url(a).overlaps(&url(b));
        assert!(overlaps("gs://acme/docs", "gs://acme/docs/"));
        assert!(overlaps("gs://acme", "gs://acme/docs"));
        assert!(overlaps("gs://acme/docs", "gs://acme"));
        assert!(overlaps("gs://acme/docs", "gs://acme/docs/2024"));
        assert!(overlaps("gs://acme/docs/2024", "gs://acme/docs"));
        assert!(!overlaps("gs://acme/docs", "gs://acme/docs2"));
        assert!(!overlaps("gs://acme/docs", "gs://acme/doc"));
        assert!(!overlaps("gs://acme/docs", "gs://other/docs"));
    }
}
