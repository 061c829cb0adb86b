//! The shard's item memory: one mmap region carved into equal segments. Anonymous by
//! default; file-backed (`--memory-file`) so that items survive a restart. Optionally
//! asks for transparent huge pages.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use memmap2::{MmapMut, MmapOptions};

pub struct Arena {
    map: MmapMut,
    seg_size: usize,
    nsegs: usize,
    file_backed: bool,
}

impl Arena {
    /// Anonymous memory for `nsegs` segments of `seg_size` bytes.
    pub fn anonymous(seg_size: usize, nsegs: usize, huge_pages: bool) -> io::Result<Self> {
        let map = MmapOptions::new().len(seg_size * nsegs).map_anon()?;
        let arena = Arena { map, seg_size, nsegs, file_backed: false };
        arena.advise_huge_pages(huge_pages);
        Ok(arena)
    }

    /// Memory backed by the file at `path` (created or resized to fit). Returns the arena
    /// and whether the file already had exactly this size (a candidate for recovery).
    pub fn file_backed(path: &Path, seg_size: usize, nsegs: usize, huge_pages: bool) -> io::Result<(Self, bool)> {
        let len = (seg_size * nsegs) as u64;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let same_size = file.metadata()?.len() == len;
        if !same_size {
            file.set_len(0)?;
            file.set_len(len)?;
        }
        // SAFETY: the file is this process's own store; nothing else maps or truncates it
        // while the server runs (the documented contract of --memory-file).
        let map = unsafe { MmapOptions::new().len(len as usize).map_mut(&file)? };
        let arena = Arena { map, seg_size, nsegs, file_backed: true };
        arena.advise_huge_pages(huge_pages);
        Ok((arena, same_size))
    }

    fn advise_huge_pages(&self, huge_pages: bool) {
        if !huge_pages {
            return;
        }
        if let Err(e) = self.map.advise(memmap2::Advice::HugePage) {
            tracing::warn!("huge pages unavailable ({e}); using normal pages");
        }
    }

    pub fn seg_size(&self) -> usize {
        self.seg_size
    }

    pub fn nsegs(&self) -> usize {
        self.nsegs
    }

    pub fn is_file_backed(&self) -> bool {
        self.file_backed
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    pub fn segment(&self, seg: usize) -> &[u8] {
        &self.map[seg * self.seg_size..(seg + 1) * self.seg_size]
    }

    /// Writes dirty pages of a file-backed arena to the file.
    pub fn sync(&self) -> io::Result<()> {
        if self.file_backed {
            self.map.flush()?;
        }
        Ok(())
    }
}
