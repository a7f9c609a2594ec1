//! The two requests of git's protocol v2 over smart HTTP that a partial checkout needs: `ls-refs`
//! and `fetch` of objects named by id (with a filter). Specification: git's
//! Documentation/gitprotocol-v2.txt. In v2, "wants can be anything and are not limited to
//! advertised objects"; a server may still refuse (`ERR ... not our ref`), and filters need
//! `uploadpack.allowFilter` (advertised as `fetch=... filter`; a server without it fails the
//! request). Both are sent without the capability advertisement first (`GET info/refs` with
//! `Git-Protocol: version=2`): the commands are stateless over HTTP, and the advertisement would
//! cost a round trip on every edit; a server that does not answer them in v2 is a refusal, and the
//! caller falls back to protocol v0 through libgit2.

use std::collections::BTreeMap;

use step_kit::StepError;

use crate::pktline::{self, Packet};
use crate::smart_http::text;
use crate::Remote;

/// The refs `ls-refs` listed and where HEAD points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RefListing {
    pub refs: BTreeMap<String, String>,
    pub head: Option<String>,
}

/// What a `fetch` brought: a pack, or the server's refusal (an `ERR` line, a sideband error, or
/// no pack at all) in its own words.
pub(crate) enum Fetched {
    Pack(Vec<u8>),
    Refused(String),
}

impl Remote {
    /// `ls-refs` of the refs starting with one of `prefixes`, with symbolic refs' targets; the
    /// inner error is an answer that is not protocol v2's (the server's words, or why not).
    pub(crate) async fn ls_refs(
        &self,
        prefixes: &[String],
    ) -> Result<Result<RefListing, String>, StepError> {
        let mut args = vec!["symrefs".to_owned()];
        args.extend(prefixes.iter().map(|p| format!("ref-prefix {p}")));
        let body = self
            .post(
                "upload-pack",
                command("ls-refs", &args),
                true,
                "list refs of",
            )
            .await?;
        Ok(parse_ls_refs(&body))
    }

    /// `fetch` with `args` (`want <id>`, `deepen 1`, `filter tree:0`, ...; `no-progress` and
    /// `done` are added): the pack, or the server's refusal.
    pub(crate) async fn fetch_pack(&self, args: &[String]) -> Result<Fetched, StepError> {
        let mut args = args.to_vec();
        args.extend(["no-progress".to_owned(), "done".to_owned()]);
        let body = self
            .post(
                "upload-pack",
                command("fetch", &args),
                true,
                "fetch objects of",
            )
            .await?;
        parse_fetch(&body).map_err(|e| {
            StepError::precondition(format!("{}: malformed fetch answer: {e}", self.url()))
        })
    }
}

/// A v2 command request: `command=<name>`, the capabilities, a delimiter, the arguments, a flush.
fn command(name: &str, args: &[String]) -> Vec<u8> {
    let mut body = Vec::new();
    pktline::encode(&mut body, format!("command={name}\n").as_bytes());
    pktline::encode(
        &mut body,
        concat!("agent=sandbox-steps/", env!("CARGO_PKG_VERSION"), "\n").as_bytes(),
    );
    pktline::encode(&mut body, b"object-format=sha1\n");
    body.extend_from_slice(b"0001");
    for arg in args {
        pktline::encode(&mut body, format!("{arg}\n").as_bytes());
    }
    pktline::flush(&mut body);
    body
}

fn data_lines(body: &[u8]) -> Result<Vec<&[u8]>, String> {
    Ok(pktline::decode(body)?
        .into_iter()
        .filter_map(|p| match p {
            Packet::Data(d) => Some(d),
            Packet::Flush => None,
        })
        .collect())
}

/// `<id> <ref>[ symref-target:<target>][ peeled:<id>]` lines, then a flush (always there: an
/// answer without it is not protocol v2's).
fn parse_ls_refs(body: &[u8]) -> Result<RefListing, String> {
    if !body.ends_with(b"0000") {
        return Err("the answer does not end with a flush packet".into());
    }
    let mut listing = RefListing::default();
    for data in data_lines(body)? {
        let line = text(data)?;
        if let Some(message) = line.strip_prefix("ERR ") {
            return Err(format!("the remote said {message:?}"));
        }
        let mut fields = line.split(' ');
        let (Some(id), Some(name)) = (fields.next(), fields.next()) else {
            return Err(format!("a line without a ref name: {line:?}"));
        };
        if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("object id {id:?} is not 40 hex digits"));
        }
        let mut id = id.to_owned();
        for attribute in fields {
            if let Some(target) = attribute.strip_prefix("symref-target:") {
                if name == "HEAD" {
                    listing.head = Some(target.to_owned());
                }
            } else if let Some(peeled) = attribute.strip_prefix("peeled:") {
                id = peeled.to_owned();
            }
        }
        if name != "HEAD" {
            listing.refs.insert(name.to_owned(), id);
        }
    }
    Ok(listing)
}

/// The fetch answer: sections (`acknowledgments`, `shallow-info`, `wanted-refs`, ...) separated by
/// delimiters, the last `packfile`, whose packets are side-band multiplexed: 1 pack data,
/// 2 progress, 3 a fatal error. An `ERR` line anywhere is the server's refusal.
fn parse_fetch(body: &[u8]) -> Result<Fetched, String> {
    let mut pack = Vec::new();
    let mut in_pack = false;
    for data in data_lines(body)? {
        if !in_pack {
            if let Some(message) = data.strip_prefix(b"ERR ") {
                return Ok(Fetched::Refused(
                    String::from_utf8_lossy(message).trim_end().to_owned(),
                ));
            }
            in_pack = data == b"packfile\n" || data == b"packfile";
            continue;
        }
        match data.split_first() {
            Some((1, chunk)) => pack.extend_from_slice(chunk),
            Some((2, _)) => {}
            Some((3, message)) => {
                return Ok(Fetched::Refused(
                    String::from_utf8_lossy(message).trim_end().to_owned(),
                ))
            }
            _ => return Err("a side-band packet of an unknown band".into()),
        }
    }
    if !in_pack {
        return Ok(Fetched::Refused("the answer holds no pack".into()));
    }
    if !pack.starts_with(b"PACK") {
        return Err("the pack does not start with PACK".into());
    }
    Ok(Fetched::Pack(pack))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(lines: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            match *l {
                b"" => pktline::flush(&mut out),
                b"DELIM" => out.extend_from_slice(b"0001"),
                _ => pktline::encode(&mut out, l),
            }
        }
        out
    }

    #[test]
    fn ls_refs_with_head_and_a_peeled_tag() {
        let body = packets(&[
            b"1111111111111111111111111111111111111111 HEAD symref-target:refs/heads/main\n",
            b"1111111111111111111111111111111111111111 refs/heads/main\n",
            b"2222222222222222222222222222222222222222 refs/tags/v1 peeled:3333333333333333333333333333333333333333\n",
            b"",
        ]);
        let listing = parse_ls_refs(&body).unwrap();
        assert_eq!(listing.head.as_deref(), Some("refs/heads/main"));
        assert_eq!(
            listing.refs["refs/tags/v1"],
            "3333333333333333333333333333333333333333"
        );
        assert!(!listing.refs.contains_key("HEAD"));
        assert!(parse_ls_refs(&packets(&[b"zz refs/heads/x\n", b""])).is_err());
    }

    #[test]
    fn fetch_answers_a_pack_a_refusal_or_an_error() {
        let answer = packets(&[
            b"shallow-info\n",
            b"shallow 1111111111111111111111111111111111111111",
            b"DELIM",
            b"packfile\n",
            b"\x01PACK\0\0\0\x02",
            b"\x02counting objects\n",
            b"\x01\0\0\0\x01rest",
            b"",
        ]);
        match parse_fetch(&answer).unwrap() {
            Fetched::Pack(pack) => assert_eq!(pack, b"PACK\0\0\0\x02\0\0\0\x01rest"),
            Fetched::Refused(why) => panic!("{why}"),
        }
        let refused = packets(&[b"ERR upload-pack: not our ref 1111\n", b""]);
        assert!(
            matches!(parse_fetch(&refused).unwrap(), Fetched::Refused(why) if why.contains("not our ref"))
        );
        let fatal = packets(&[b"packfile\n", b"\x03fatal: out of memory\n", b""]);
        assert!(
            matches!(parse_fetch(&fatal).unwrap(), Fetched::Refused(why) if why.contains("out of memory"))
        );
        assert!(matches!(
            parse_fetch(&packets(&[b""])).unwrap(),
            Fetched::Refused(_)
        ));
        assert!(parse_fetch(&packets(&[b"packfile\n", b"\x09x", b""])).is_err());
    }

    #[test]
    fn a_command_request_is_framed_as_git_does() {
        let body = command("fetch", &["want 11".to_owned(), "done".to_owned()]);
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("0012command=fetch\n"), "{text}");
        assert!(text.contains("0017object-format=sha1\n0001000cwant 11\n0009done\n0000"));
    }
}
