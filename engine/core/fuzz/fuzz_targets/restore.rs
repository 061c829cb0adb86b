//! The warm-restart metadata reader on untrusted input: segment bytes and a metadata
//! body (after the magic and this store's settings), with the checksums fixed up or not
//! (the first byte says), so that the fuzzer reaches the parser behind them. Whatever
//! it is given, the store must come out consistent (`Store::check`): a damaged file is
//! refused (the store starts empty), a well-formed one never makes overlapping or
//! unfindable items. The store must then work normally.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcache_core::store::StoreMode;
use ringcache_core::store::{Store, StoreConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else { return };
    let split = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (segments, body) = rest.split_at(split);
    let mut store = match Store::new(StoreConfig { expected_items: Some(64), ..StoreConfig::with_memory(4 << 20) }) {
        Ok(s) => s,
        Err(e) => panic!("store: {e}"),
    };
    store.restore_untrusted(segments, body, flags & 1 == 1);
    if let Err(e) = store.check() {
        panic!("inconsistent after restoring: {e}");
    }
    // It still works: writes, reads, deletes, expiry and eviction.
    for i in 0..64u32 {
        let key = format!("after-{i}");
        let value = vec![b'v'; (i as usize * 977) % 40_000];
        store.store(StoreMode::Set, key.as_bytes(), i, if i % 3 == 0 { 200 } else { 0 }, &value, 0, 100);
        if let Some(got) = store.get(key.as_bytes(), 100) {
            assert_eq!(got.value, &value[..], "{key}");
        }
        if i % 5 == 0 {
            store.delete(key.as_bytes(), 100);
        }
    }
    store.sweep(300, 8);
    if let Err(e) = store.check() {
        panic!("inconsistent after use: {e}");
    }
});
