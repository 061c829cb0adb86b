//! The request parser on arbitrary bytes, consumed request by request as a connection
//! does. Beyond not panicking: every request consumes at least one byte and no more than
//! it was given; keys of single-key commands are at most 250 bytes; a data block lies
//! within the buffer; and a request whose line is short enough to be read in pieces is
//! never mistaken for something else when only a prefix of it has arrived.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcache_core::protocol::{parse, Limits, MetaCmd, Op, Parse, Request, KEY_MAX_LENGTH, MAX_LINE_WITHOUT_NEWLINE};

fuzz_target!(|data: &[u8]| {
    let Some((&setting, stream)) = data.split_first() else { return };
    let limits = Limits { max_item_size: 1024 << (setting % 8), cas_enabled: setting & 0x80 == 0 };
    let mut at = 0;
    let mut swallow = 0usize;
    while at < stream.len() {
        if swallow > 0 {
            let skip = swallow.min(stream.len() - at);
            at += skip;
            swallow -= skip;
            continue;
        }
        let buf = &stream[at..];
        match parse(buf, &limits) {
            Parse::Incomplete | Parse::Close => break,
            Parse::NeedData { total } => {
                assert!(total > buf.len(), "NeedData for {total} bytes with {} at hand", buf.len());
                break;
            }
            Parse::Request { request, consumed, swallow: s, .. } => {
                swallow = s;
                assert!(consumed > 0 && consumed <= buf.len(), "consumed {consumed} of {}", buf.len());
                match request {
                    Request::Op(Op::Store { key, data, .. }) => {
                        assert!(key.len() <= KEY_MAX_LENGTH);
                        let data_at = data.as_ptr() as usize - buf.as_ptr() as usize;
                        assert!(data_at + data.len() + 2 == consumed, "data block ends the request");
                        assert!(
                            limits.item_fits(key.len(), 0, data.len()) || limits.item_fits(key.len(), 1, data.len())
                        );
                    }
                    Request::Op(Op::Meta(m)) if m.cmd == MetaCmd::Set => {
                        let data_at = m.data.as_ptr() as usize - buf.as_ptr() as usize;
                        assert!(data_at + m.data.len() + 2 == consumed, "an ms data block ends the request");
                        assert!(m.key(&mut [0u8; KEY_MAX_LENGTH]).is_some(), "an op's key decodes");
                    }
                    Request::Op(op) => {
                        let mut key_buf = [0u8; KEY_MAX_LENGTH];
                        assert!(op.key(&mut key_buf).is_some_and(|key| key.len() <= KEY_MAX_LENGTH));
                        let too_large = matches!(op, Op::TooLarge { .. })
                            || matches!(op, Op::Meta(m) if m.cmd == MetaCmd::SetTooLarge);
                        assert!(s == 0 || too_large, "only a too-large value is swallowed");
                    }
                    _ => {}
                }
                // A line that fits the no-newline bound parses the same once whole,
                // whatever prefix of it arrived first: a prefix is never a request.
                let line_end = buf.iter().position(|&b| b == b'\n').map_or(buf.len(), |n| n + 1);
                if line_end <= MAX_LINE_WITHOUT_NEWLINE {
                    for cut in [consumed - 1, line_end - 1] {
                        match parse(&buf[..cut], &limits) {
                            Parse::Incomplete | Parse::NeedData { .. } => {}
                            other => panic!("a prefix of {cut} bytes of a {consumed}-byte request parsed as {other:?}"),
                        }
                    }
                }
                at += consumed;
            }
        }
    }
});
