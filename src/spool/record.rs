//! The on-disk record: `PSTN` magic, kind, payload length, payload, CRC-32 of kind, length
//! and payload. A record whose CRC does not match, or that runs past the end of the file, is a
//! torn write: recovery stops reading that segment there.

use super::envelope::{Envelope, Final, QueueId};

const MAGIC: &[u8; 4] = b"PSTN";
const HEADER_LEN: usize = 4 + 1 + 4;
const TRAILER_LEN: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A whole accepted message: id, envelope, bytes.
    Message = 1,
    /// Recipients of a message that reached a final state (delivered or bounced).
    Outcome = 2,
    /// An admin put the message on hold, or released it (Postfix's hold queue).
    Hold = 3,
}

/// Frame a payload given in parts (so a message body is copied once, into the record).
fn frame(kind: Kind, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + len + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    let crc = crc32fast::hash(&out[4..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Encode a hold (true) or release (false) record.
pub fn encode_hold(id: QueueId, held: bool) -> Vec<u8> {
    let flag = [u8::from(held), 0, 0, 0];
    frame(Kind::Hold, &[&id.0.to_le_bytes(), &flag])
}

/// Encode an outcome record: `(recipient index, final state)` pairs of one message.
pub fn encode_outcome(id: QueueId, outcomes: &[(u32, Final)]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(12 + outcomes.len() * 5);
    payload.extend_from_slice(&id.0.to_le_bytes());
    payload.extend_from_slice(&(outcomes.len() as u32).to_le_bytes());
    for (rcpt, state) in outcomes {
        payload.extend_from_slice(&rcpt.to_le_bytes());
        payload.push(*state as u8);
    }
    frame(Kind::Outcome, &[&payload])
}

/// Encode a message record.
pub fn encode_message(id: QueueId, envelope: &Envelope, message: &[u8]) -> Vec<u8> {
    encode_message_parts(id, envelope, &[message])
}

/// Encode a message record whose bytes come in parts, copied once, into the record.
pub fn encode_message_parts(id: QueueId, envelope: &Envelope, message: &[&[u8]]) -> Vec<u8> {
    let env = serde_json::to_vec(envelope).expect("an Envelope always serialises");
    let (id, env_len) = (id.0.to_le_bytes(), (env.len() as u32).to_le_bytes());
    let mut parts: Vec<&[u8]> = vec![&id, &env_len, &env];
    parts.extend_from_slice(message);
    frame(Kind::Message, &parts)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Message {
        id: QueueId,
        envelope: Envelope,
        message: &'a [u8],
        /// Bytes the whole record took.
        len: usize,
    },
    Outcome {
        id: QueueId,
        outcomes: Vec<(u32, Final)>,
        len: usize,
    },
    Hold {
        id: QueueId,
        held: bool,
        len: usize,
    },
    /// Not enough bytes, bad magic, bad CRC or a payload that does not decode.
    Torn(&'static str),
}

/// Decode the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER_LEN {
        return Decoded::Torn("short header");
    }
    if &buf[..4] != MAGIC {
        return Decoded::Torn("bad magic");
    }
    let kind = buf[4];
    let payload_len = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
    let total = HEADER_LEN + payload_len + TRAILER_LEN;
    if buf.len() < total {
        return Decoded::Torn("record runs past end of file");
    }
    let crc_at = HEADER_LEN + payload_len;
    let stored = u32::from_le_bytes([
        buf[crc_at],
        buf[crc_at + 1],
        buf[crc_at + 2],
        buf[crc_at + 3],
    ]);
    if crc32fast::hash(&buf[4..crc_at]) != stored {
        return Decoded::Torn("CRC mismatch");
    }
    let payload = &buf[HEADER_LEN..crc_at];
    if payload.len() < 12 {
        return Decoded::Torn("payload too short");
    }
    if kind == Kind::Outcome as u8 {
        return decode_outcome(payload, total);
    }
    if kind == Kind::Hold as u8 {
        let id = QueueId(u64::from_le_bytes(
            payload[..8].try_into().expect("length checked above"),
        ));
        return Decoded::Hold {
            id,
            held: payload[8] == 1,
            len: total,
        };
    }
    if kind != Kind::Message as u8 {
        return Decoded::Torn("unknown record kind");
    }
    decode_message(payload, total)
}

/// A message record's payload: id, envelope length, envelope (JSON), message bytes.
fn decode_message(payload: &[u8], total: usize) -> Decoded<'_> {
    let id = QueueId(u64::from_le_bytes(
        payload[..8].try_into().expect("8 bytes checked above"),
    ));
    let env_len =
        u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes checked above")) as usize;
    let Some(env) = payload.get(12..12 + env_len) else {
        return Decoded::Torn("envelope length out of range");
    };
    let Ok(envelope) = serde_json::from_slice(env) else {
        return Decoded::Torn("envelope does not decode");
    };
    Decoded::Message {
        id,
        envelope,
        message: &payload[12 + env_len..],
        len: total,
    }
}

/// Where reading may resume after a bad record at `at`: the next offset holding an intact
/// record. First where the bad record's own header says it ends (a damaged payload with an
/// intact header: no need to look inside it, where a message could carry bytes that look
/// like a record), else the first intact record found byte by byte.
pub fn resync(data: &[u8], at: usize) -> Option<usize> {
    let intact = |p: usize| !matches!(decode(&data[p..]), Decoded::Torn(_));
    if data.len() >= at + HEADER_LEN && &data[at..at + 4] == MAGIC {
        let payload_len =
            u32::from_le_bytes([data[at + 5], data[at + 6], data[at + 7], data[at + 8]]) as usize;
        let next = at + HEADER_LEN + payload_len + TRAILER_LEN;
        if next < data.len() && intact(next) {
            return Some(next);
        }
    }
    (at + 1..data.len()).find(|&p| data[p..].starts_with(MAGIC) && intact(p))
}

fn decode_outcome(payload: &[u8], len: usize) -> Decoded<'_> {
    let id = QueueId(u64::from_le_bytes(
        payload[..8].try_into().expect("length checked by caller"),
    ));
    let count =
        u32::from_le_bytes(payload[8..12].try_into().expect("length checked by caller")) as usize;
    let body = &payload[12..];
    if body.len() != count * 5 {
        return Decoded::Torn("outcome count does not match");
    }
    let mut outcomes = Vec::with_capacity(count);
    for item in body.chunks_exact(5) {
        let rcpt = u32::from_le_bytes(item[..4].try_into().expect("chunks of 5"));
        let state = match item[4] {
            1 => Final::Delivered,
            2 => Final::Bounced,
            3 => Final::Deleted,
            _ => return Decoded::Torn("unknown outcome state"),
        };
        outcomes.push((rcpt, state));
    }
    Decoded::Outcome { id, outcomes, len }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            sender: "a@b.example".into(),
            recipients: vec!["c@d.example".into()],
            ..Envelope::default()
        }
    }

    #[test]
    fn round_trip() {
        let rec = encode_message(QueueId(7), &env(), b"hello\r\n");
        match decode(&rec) {
            Decoded::Message {
                id,
                envelope,
                message,
                len,
            } => {
                assert_eq!(id, QueueId(7));
                assert_eq!(envelope, env());
                assert_eq!(message, b"hello\r\n");
                assert_eq!(len, rec.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outcome_round_trip() {
        let rec = encode_outcome(QueueId(9), &[(0, Final::Delivered), (2, Final::Bounced)]);
        assert_eq!(
            decode(&rec),
            Decoded::Outcome {
                id: QueueId(9),
                outcomes: vec![(0, Final::Delivered), (2, Final::Bounced)],
                len: rec.len()
            }
        );
    }

    #[test]
    fn every_truncation_and_flipped_byte_is_torn() {
        let rec = encode_message(QueueId(7), &env(), b"hello\r\n");
        for cut in 0..rec.len() {
            assert!(matches!(decode(&rec[..cut]), Decoded::Torn(_)), "cut {cut}");
        }
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x40;
            assert!(matches!(decode(&bad), Decoded::Torn(_)), "flip {i}");
        }
    }
}
