//! The peer wire format, sans-IO: what one node sends another over their connection.
//! A frame is `len u32 | kind u8 | group u32 | body` (`len` counts what follows it);
//! many frames, for many groups, go out in one write. Bodies: a Raft message in its
//! protobuf encoding, a snapshot chunk, or a job forwarded to the leader and its answer. [`Frames`] cuts a received byte stream back
//! into frames and refuses a frame longer than its limit before buffering it.

use protobuf::Message as _;
use raft::prelude::Message;
use ringcache_core::codec::{Reader, Writer};

use crate::snapshot::Chunk;

/// What travels between peers for one group.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    Raft(Message),
    Chunk(Chunk),
    /// A follower's job for the leader: encoded ops (an `OpBatch`), to run within
    /// `budget` reply bytes; `id` is the follower's.
    Forward {
        id: u64,
        budget: u32,
        ops: Vec<u8>,
    },
    /// The leader's answer: the replies of the ops it ran, each ending at `ends[i]`, and
    /// the offset in the forwarded ops to resume from.
    ForwardReply {
        id: u64,
        resume: u32,
        ends: Vec<u32>,
        out: Vec<u8>,
    },
}

const KIND_RAFT: u8 = 1;
const KIND_CHUNK: u8 = 2;
const KIND_FORWARD: u8 = 3;
const KIND_FORWARD_REPLY: u8 = 4;

/// Appends the frame of `envelope` for group `group` to `out`.
pub fn encode(out: &mut Vec<u8>, group: u32, envelope: &Envelope) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match envelope {
        Envelope::Raft(msg) => {
            Writer::new(out).u8(KIND_RAFT).u32(group);
            // Writing into a Vec cannot fail.
            let _ = msg.write_to_vec(out);
        }
        Envelope::Chunk(c) => {
            Writer::new(out).u8(KIND_CHUNK).u32(group).u64(c.index).u64(c.term).u32(c.seq).u32(c.total).bytes(&c.data);
        }
        Envelope::Forward { id, budget, ops } => {
            Writer::new(out).u8(KIND_FORWARD).u32(group).u64(*id).u32(*budget).bytes(ops);
        }
        Envelope::ForwardReply { id, resume, ends, out: replies } => {
            let mut w = Writer::new(out);
            w.u8(KIND_FORWARD_REPLY).u32(group).u64(*id).u32(*resume).u32(ends.len() as u32);
            for &end in ends {
                w.u32(end);
            }
            w.bytes(replies);
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Longer than the receiver's limit.
    TooLong(usize),
    /// Not a frame this code knows how to read.
    Malformed,
}

/// Decodes one frame's content (what follows its length): the group and the envelope.
pub fn decode(frame: &[u8]) -> Result<(u32, Envelope), FrameError> {
    let mut r = Reader::new(frame);
    let kind = r.u8().ok_or(FrameError::Malformed)?;
    let group = r.u32().ok_or(FrameError::Malformed)?;
    let envelope = match kind {
        KIND_RAFT => {
            let body = r.take(r.remaining()).ok_or(FrameError::Malformed)?;
            Envelope::Raft(Message::parse_from_bytes(body).map_err(|_| FrameError::Malformed)?)
        }
        KIND_CHUNK => {
            let (index, term) = (r.u64(), r.u64());
            let (seq, total) = (r.u32(), r.u32());
            let data = r.bytes();
            match (index, term, seq, total, data) {
                (Some(index), Some(term), Some(seq), Some(total), Some(data)) if r.is_done() => {
                    Envelope::Chunk(Chunk { index, term, seq, total, data: data.to_vec() })
                }
                _ => return Err(FrameError::Malformed),
            }
        }
        KIND_FORWARD => {
            let (id, budget, ops) = (r.u64(), r.u32(), r.bytes());
            match (id, budget, ops) {
                (Some(id), Some(budget), Some(ops)) if r.is_done() => {
                    Envelope::Forward { id, budget, ops: ops.to_vec() }
                }
                _ => return Err(FrameError::Malformed),
            }
        }
        KIND_FORWARD_REPLY => {
            let (id, resume, count) = (r.u64(), r.u32(), r.u32());
            let (Some(id), Some(resume), Some(count)) = (id, resume, count) else { return Err(FrameError::Malformed) };
            if count as usize > r.remaining() / 4 {
                return Err(FrameError::Malformed);
            }
            let ends = (0..count).map(|_| r.u32()).collect::<Option<Vec<u32>>>().ok_or(FrameError::Malformed)?;
            let replies = r.bytes().ok_or(FrameError::Malformed)?;
            if !r.is_done()
                || ends.windows(2).any(|w| w[0] > w[1])
                || ends.last().is_some_and(|&e| e as usize > replies.len())
            {
                return Err(FrameError::Malformed);
            }
            Envelope::ForwardReply { id, resume, ends, out: replies.to_vec() }
        }
        _ => return Err(FrameError::Malformed),
    };
    Ok((group, envelope))
}

/// Cuts a byte stream into frames.
#[derive(Debug)]
pub struct Frames {
    buf: Vec<u8>,
    at: usize,
    max_frame: usize,
}

impl Frames {
    /// Frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Frames { buf: Vec::new(), at: 0, max_frame }
    }

    /// Adds received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's content, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let rest = &self.buf[self.at..];
        let Some(len) = rest.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
            return Ok(None);
        };
        if len > self.max_frame {
            return Err(FrameError::TooLong(len));
        }
        if rest.len() < 4 + len {
            return Ok(None);
        }
        let start = self.at + 4;
        self.at = start + len;
        Ok(Some(&self.buf[start..start + len]))
    }

    /// Drops consumed bytes (call between reads so the buffer does not grow).
    pub fn compact(&mut self) {
        self.buf.drain(..self.at);
        self.at = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::{Entry, MessageType};

    #[test]
    fn frames_round_trip_through_a_split_stream() {
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgAppend);
        msg.from = 1;
        msg.to = 2;
        msg.term = 7;
        let mut e = Entry::default();
        e.index = 9;
        e.data = b"effects".to_vec().into();
        msg.entries = vec![e].into();
        let sent = vec![
            (3, Envelope::Raft(msg)),
            (0, Envelope::Chunk(Chunk { index: 5, term: 2, seq: 1, total: 3, data: vec![1, 2, 3] })),
            (1, Envelope::Forward { id: 7, budget: 1 << 20, ops: vec![3, 0, 1, b'k'] }),
            (1, Envelope::ForwardReply { id: 7, resume: 4, ends: vec![3, 9], out: b"abcdefghi".to_vec() }),
        ];
        let mut wire = Vec::new();
        for (group, e) in &sent {
            encode(&mut wire, *group, e);
        }
        for split in 0..wire.len() {
            let mut frames = Frames::new(1 << 20);
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                frames.extend(part);
                while let Ok(Some(f)) = frames.next_frame() {
                    got.push(decode(f));
                }
                frames.compact();
            }
            assert_eq!(got, sent.iter().cloned().map(Ok).collect::<Vec<_>>(), "split at {split}");
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let mut frames = Frames::new(16);
        frames.extend(&100u32.to_le_bytes());
        assert_eq!(frames.next_frame(), Err(FrameError::TooLong(100)));
        assert_eq!(decode(&[9, 0, 0, 0, 0]), Err(FrameError::Malformed));
        assert_eq!(decode(&[KIND_CHUNK, 0, 0, 0, 0, 1]), Err(FrameError::Malformed));
        assert_eq!(decode(&[KIND_RAFT, 0]), Err(FrameError::Malformed));
        // Reply ends beyond the replies, or a count larger than the frame.
        let mut bad = Vec::new();
        encode(&mut bad, 0, &Envelope::ForwardReply { id: 1, resume: 0, ends: vec![10], out: b"abc".to_vec() });
        assert_eq!(decode(&bad[4..]), Err(FrameError::Malformed));
        let mut huge = vec![KIND_FORWARD_REPLY, 0, 0, 0, 0];
        huge.extend_from_slice(&[0; 12]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), Err(FrameError::Malformed));
    }
}
