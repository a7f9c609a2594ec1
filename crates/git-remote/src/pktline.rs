//! git's pkt-line framing: four hex digits of length (including themselves), then the payload;
//! `0000` is a flush packet.

/// Appends one data packet holding `payload`.
pub fn encode(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
}

/// Appends a flush packet.
pub fn flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

/// One decoded packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Data(&'a [u8]),
    /// `0000`, and the v2 delimiters `0001`/`0002`, which end a section the same way.
    Flush,
}

/// Splits `input` into packets; an error names what is malformed.
pub fn decode(mut input: &[u8]) -> Result<Vec<Packet<'_>>, String> {
    let mut packets = Vec::new();
    while !input.is_empty() {
        if input.len() < 4 {
            return Err(format!(
                "truncated pkt-line header ({} bytes left)",
                input.len()
            ));
        }
        let len_text =
            std::str::from_utf8(&input[..4]).map_err(|_| "pkt-line length is not hex")?;
        let len = usize::from_str_radix(len_text, 16)
            .map_err(|_| format!("pkt-line length {len_text:?} is not hex"))?;
        match len {
            0..=2 => {
                packets.push(Packet::Flush);
                input = &input[4..];
            }
            3 => return Err("pkt-line length 3 is invalid".into()),
            _ => {
                if input.len() < len {
                    return Err(format!(
                        "pkt-line of {len} bytes truncated at {}",
                        input.len()
                    ));
                }
                packets.push(Packet::Data(&input[4..len]));
                input = &input[len..];
            }
        }
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(&mut buf, b"hello\n");
        flush(&mut buf);
        assert_eq!(buf, b"000ahello\n0000");
        assert_eq!(
            decode(&buf).unwrap(),
            vec![Packet::Data(b"hello\n"), Packet::Flush]
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [&b"00"[..], b"zzzz", b"0003", b"0010abc", b"ffff"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
