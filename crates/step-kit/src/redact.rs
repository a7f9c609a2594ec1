//! Credentials inside URLs are never printed: `https://x-access-token:ghp_…@github.com/acme/infra`
//! becomes `https://***@github.com/acme/infra`, and secret-looking query parameters (`token=`,
//! `access_token=`, signed-URL signatures) lose their values. Every log line passes through
//! [`redact_text`] (see the logging writer), so a URL that slips into an error message is safe too.

/// Query parameters whose values are credentials (compared case-insensitively).
const SECRET_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "private_token",
    "password",
    "secret",
    "client_secret",
    "sig",
    "signature",
    "x-goog-signature",
    "x-amz-signature",
    "x-goog-credential",
    "x-amz-credential",
];

const MASK: &str = "***";

/// Redacts one URL (or any text holding URLs; the same as [`redact_text`]).
pub fn redact_url(url: &str) -> String {
    redact_text(url)
}

/// Redacts the user-info of every `scheme://user:pass@host` and the values of secret query
/// parameters in free text.
pub fn redact_text(text: &str) -> String {
    let userinfo_done = redact_userinfo(text);
    redact_query_params(&userinfo_done)
}

fn ends_authority(c: char) -> bool {
    matches!(
        c,
        '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`' | ')' | ']' | ','
    ) || c.is_whitespace()
}

fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let authority_len = tail.find(ends_authority).unwrap_or(tail.len());
        let authority = &tail[..authority_len];
        match authority.rfind('@') {
            Some(at) if at > 0 => {
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_len..];
    }
    out.push_str(rest);
    out
}

fn redact_query_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // A parameter starts after '?' or '&'; its value runs to the next '&', '#', quote or space.
    while let Some(pos) = rest.find(['?', '&']) {
        let (head, tail) = rest.split_at(pos + 1);
        out.push_str(head);
        let name_len = tail
            .find(|c: char| c == '=' || ends_authority(c) || c == '&')
            .unwrap_or(tail.len());
        let name = &tail[..name_len];
        let after_name = &tail[name_len..];
        if after_name.starts_with('=') && SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
        {
            let value = &after_name[1..];
            let value_len = value
                .find(|c: char| c == '&' || c == '#' || c == '"' || c == '\'' || c.is_whitespace())
                .unwrap_or(value.len());
            out.push_str(name);
            out.push('=');
            out.push_str(MASK);
            rest = &value[value_len..];
        } else {
            out.push_str(name);
            rest = after_name;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_password_in_urls_are_masked() {
        let cases = [
            (
                "https://x-access-token:ghp_abc123@github.com/acme/infra.git",
                "https://***@github.com/acme/infra.git",
            ),
            (
                "https://ghp_abc123@github.com/a/b",
                "https://***@github.com/a/b",
            ),
            (
                "postgres://admin:s3cr%40t@db:5432/postgres",
                "postgres://***@db:5432/postgres",
            ),
            (
                "fetch failed for 'https://u:p@h/r' (401)",
                "fetch failed for 'https://***@h/r' (401)",
            ),
            (
                "two: http://a:b@x and ssh://git:k@y/z",
                "two: http://***@x and ssh://***@y/z",
            ),
            (
                "no credentials: https://github.com/a/b",
                "no credentials: https://github.com/a/b",
            ),
            (
                "an address a@b.c is not a URL",
                "an address a@b.c is not a URL",
            ),
            ("http://host/path@version", "http://host/path@version"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_text(input), want, "{input}");
        }
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        assert_eq!(
            redact_url("https://h/o?X-Goog-Signature=abcd&alt=media"),
            "https://h/o?X-Goog-Signature=***&alt=media"
        );
        assert_eq!(
            redact_url("https://api/x?per_page=100&access_token=zzz"),
            "https://api/x?per_page=100&access_token=***"
        );
        assert_eq!(redact_url("https://h/?q=token"), "https://h/?q=token");
        assert_eq!(redact_text("a & b ? c"), "a & b ? c");
    }

    #[test]
    fn redaction_keeps_unicode_intact() {
        assert_eq!(
            redact_text("ünï https://ü:ß@host/ü?token=ß&x=ü"),
            "ünï https://***@host/ü?token=***&x=ü"
        );
    }
}
