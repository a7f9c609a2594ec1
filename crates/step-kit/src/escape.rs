//! Untrusted values (branch names, labels from a webhook) are quoted and escaped before they go
//! into a log line or an error, so a newline, an ANSI escape or a right-to-left override in them
//! can't forge or hide log lines.

/// Longest part of an untrusted value shown; the rest is elided.
const SHOWN_MAX_CHARS: usize = 256;

/// `value` in double quotes, with `"` and `\` escaped and every control or invisible formatting
/// character (C0/C1 controls, bidi overrides and marks, zero-width characters, line separators)
/// written as `\u{XXXX}`.
pub fn escape_untrusted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for (i, c) in value.chars().enumerate() {
        if i == SHOWN_MAX_CHARS {
            out.push_str(&format!(
                "…(+{} chars)",
                value.chars().count() - SHOWN_MAX_CHARS
            ));
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if naming::is_invisible(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_marks_are_escaped() {
        assert_eq!(escape_untrusted("main"), r#""main""#);
        assert_eq!(escape_untrusted("a\nb"), r#""a\u{000a}b""#);
        assert_eq!(escape_untrusted("\u{1b}[31mred"), r#""\u{001b}[31mred""#);
        assert_eq!(escape_untrusted("abc\u{202e}fed"), r#""abc\u{202e}fed""#);
        assert_eq!(escape_untrusted("a\u{200f}"), r#""a\u{200f}""#);
        assert_eq!(escape_untrusted(r#"say "hi" \o/"#), r#""say \"hi\" \\o/""#);
        assert_eq!(escape_untrusted("Ünïcode 🦄"), "\"Ünïcode 🦄\"");
    }

    #[test]
    fn long_values_are_elided() {
        let shown = escape_untrusted(&"x".repeat(300));
        assert!(shown.ends_with("…(+44 chars)\""), "{shown}");
    }
}
