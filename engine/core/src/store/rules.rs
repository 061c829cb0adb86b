//! memcached's storage commands and its item-size rule: what a store does with a write
//! and which items it accepts. The protocol parser uses the same rule to decide, before
//! reading a value, that it is too large; it lives here because it is the store's rule.

/// memcached's item header size with CAS (48 bytes of header plus the 8-byte CAS).
const ITEM_HEADER_WITH_CAS: usize = 56;
const ITEM_HEADER_WITHOUT_CAS: usize = 48;

/// The item-size rule (and the setting behind it) the parser and the store share.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `-I`: the largest item, header included, as memcached counts it.
    pub max_item_size: usize,
    /// `-C` turns CAS off, which shrinks memcached's item header by 8 bytes.
    pub cas_enabled: bool,
}

impl Limits {
    /// memcached's `item_size_ok`: header + key + 1 + value + "\r\n" (+4 for flags).
    pub fn item_fits(&self, key_len: usize, flags: u32, value_len: usize) -> bool {
        let header = if self.cas_enabled { ITEM_HEADER_WITH_CAS } else { ITEM_HEADER_WITHOUT_CAS };
        let flags_len = if flags != 0 { 4 } else { 0 };
        header + flags_len + key_len + 1 + value_len + 2 <= self.max_item_size
    }
}

/// Where the CAS (version) of a written item comes from: a setting of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasSource {
    /// memcached's `-C`: every CAS is 0 and none is stored.
    Off,
    /// Standalone: the store derives a write's CAS from where the item lands (segment
    /// generation, shard, offset), unique and free: no bytes in the item. A stamp an
    /// effect carries is ignored.
    Derived,
    /// Replicated: every write carries its CAS (the log index of the write), the same on
    /// every replica, and the item stores it: 8 bytes per item. A write without one is
    /// refused ([`super::Applied::Unstamped`]).
    Stamped,
}

impl CasSource {
    pub fn enabled(self) -> bool {
        self != CasSource::Off
    }

    /// The code the warm-restart metadata records (0 and 1 are what a `cas_enabled`
    /// flag wrote before there was a choice).
    pub fn code(self) -> u64 {
        match self {
            CasSource::Off => 0,
            CasSource::Derived => 1,
            CasSource::Stamped => 2,
        }
    }
}

/// The storage commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}
