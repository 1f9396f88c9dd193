//! The bbolt 1.3 file format, as far as etcd's snapshot files need it: a
//! one-pass writer of sorted buckets and a bounded, validating reader.
//!
//! Layout of a bbolt file (bbolt `page.go`, `db.go`, `bucket.go`; all
//! integers little-endian): pages of `page_size` bytes; each starts with a
//! 16-byte header (page id u64, flags u16, element count u16, overflow page
//! count u32). Pages 0 and 1 are meta pages (magic `0xED0CDAED`, version 2,
//! page size, flags, the root bucket as (root page, sequence), the freelist
//! page, the high-water page id, the transaction id, and an FNV-1a-64
//! checksum of the 56 bytes before it); the valid one with the higher
//! transaction id wins. Leaf elements are (flags u32, pos u32, key size u32,
//! value size u32) with `pos` counted from the element itself; branch
//! elements are (pos u32, key size u32, child page u64). A bucket is a leaf
//! element flagged `0x01` whose value is (root page u64, sequence u64),
//! followed by the bucket's own page when the root is 0 (an inline bucket).
//!
//! **The writer** builds each bucket's B+tree bottom-up from keys in
//! ascending order and hands every page to a [`PageSink`] as soon as it is
//! full, so it holds one page per tree level whatever the data. Page ids are
//! fixed: 0 and 1 meta, 2 the (empty) freelist, then the root bucket's leaf,
//! then the buckets in name order. The meta pages come first in the file but
//! name the buckets' roots and the page count, so a stream is written twice:
//! once into a [`PageCounter`] to get the [`Layout`], then for real with it.
//!
//! **The reader** never trusts the file: every page id, element position and
//! size is checked against the file's length before it is read; trees
//! deeper than [`MAX_DEPTH`] or visiting more pages than the file holds are
//! refused, and keys must ascend. Errors name the page.

use std::io;

use crate::core::snapshot::SnapshotError;

mod reader;

pub use reader::{BoltReader, BucketRoot, VisitKv};

/// Page size of the files this writer makes, bytes (bbolt uses the OS page
/// size, 4096 on every platform etcd supports).
pub const PAGE_SIZE: usize = 4096;
const HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const FREELIST_PAGE: u16 = 0x10;
/// Leaf element flag: the value is a nested bucket.
const BUCKET_LEAF: u32 = 0x01;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
/// Offset of the checksum inside the meta struct (it covers the bytes before).
const META_CHECKSUM_AT: usize = 56;
const FREELIST_PGID: u64 = 2;
const ROOT_PGID: u64 = 3;
/// Deepest tree (buckets nested in buckets count too) the reader follows.
pub const MAX_DEPTH: usize = 32;
/// Largest page (with its overflow) the reader accepts, bytes.
const MAX_PAGE_BYTES: u64 = 256 << 20;

/// Where a writer's pages go.
pub trait PageSink {
    /// Takes the next page (a multiple of [`PAGE_SIZE`] bytes, in page-id order).
    ///
    /// # Errors
    /// Whatever writing fails with.
    fn put(&mut self, page: &[u8]) -> Result<(), SnapshotError>;
}

/// A sink that only counts bytes: the planning pass.
#[derive(Debug, Default)]
pub struct PageCounter {
    /// Bytes taken.
    pub bytes: u64,
}

impl PageSink for PageCounter {
    fn put(&mut self, page: &[u8]) -> Result<(), SnapshotError> {
        self.bytes += page.len() as u64;
        Ok(())
    }
}

/// Where a file's buckets start, found by the planning pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Root page of each bucket, in the order of the names given.
    pub roots: Vec<u64>,
    /// Pages in the file (bbolt's high-water mark).
    pub pages: u64,
}

impl Layout {
    /// The file's size, bytes.
    pub fn bytes(&self) -> u64 {
        self.pages * PAGE_SIZE as u64
    }
}

/// Writes a whole bbolt file of top-level buckets `names` (ascending,
/// distinct) into `sink`; `fill(i, tree)` adds bucket `i`'s keys in
/// ascending order. With `layout: None` the meta pages and the root bucket
/// hold placeholders (use a [`PageCounter`]); with the layout that pass
/// returned, the file is complete. Returns the layout written.
///
/// # Errors
/// The sink's and `fill`'s errors; [`SnapshotError::Changed`] when the
/// second pass does not lay out as the first did.
pub fn write_file<S, F>(
    sink: &mut S,
    names: &[&[u8]],
    layout: Option<&Layout>,
    mut fill: F,
) -> Result<Layout, SnapshotError>
where
    S: PageSink,
    F: FnMut(usize, &mut TreeWriter<'_, S>) -> Result<(), SnapshotError>,
{
    let placeholder = Layout {
        roots: vec![0; names.len()],
        pages: 0,
    };
    let planned = layout.unwrap_or(&placeholder);
    for (pgid, txid) in [(0u64, 0u64), (1, 1)] {
        sink.put(&meta_page(pgid, txid, planned.pages))?;
    }
    let mut freelist = vec![0u8; PAGE_SIZE];
    page_header(&mut freelist, FREELIST_PGID, FREELIST_PAGE, 0, 0);
    sink.put(&freelist)?;
    let root_entries: Vec<(Vec<u8>, Vec<u8>)> = names
        .iter()
        .zip(&planned.roots)
        .map(|(name, root)| {
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&root.to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
            (name.to_vec(), v)
        })
        .collect();
    let root_page = leaf_page(ROOT_PGID, &root_entries, BUCKET_LEAF);
    let mut next = ROOT_PGID + (root_page.len() / PAGE_SIZE) as u64;
    sink.put(&root_page)?;
    let mut roots = Vec::with_capacity(names.len());
    for i in 0..names.len() {
        let mut tree = TreeWriter {
            sink: &mut *sink,
            next: &mut next,
            leaf: Vec::new(),
            leaf_bytes: HEADER,
            levels: Vec::new(),
            last: None,
        };
        fill(i, &mut tree)?;
        roots.push(tree.finish()?);
    }
    let done = Layout { roots, pages: next };
    if layout.is_some_and(|l| *l != done) {
        return Err(SnapshotError::Changed);
    }
    Ok(done)
}

/// A branch page being filled: (first key, child page) entries, and the
/// page's size so far, bytes.
type BranchLevel = (Vec<(Vec<u8>, u64)>, usize);

/// One bucket's B+tree under construction (see the module docs).
pub struct TreeWriter<'a, S: PageSink> {
    sink: &'a mut S,
    next: &'a mut u64,
    leaf: Vec<(Vec<u8>, Vec<u8>)>,
    leaf_bytes: usize,
    /// Branch levels from the bottom: the page being filled at each.
    levels: Vec<BranchLevel>,
    last: Option<Vec<u8>>,
}

impl<S: PageSink> TreeWriter<'_, S> {
    /// Adds the next key (ascending, non-empty) and its value.
    ///
    /// # Errors
    /// The sink's; [`SnapshotError::Corrupt`] for a key out of order.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), SnapshotError> {
        if key.is_empty() || self.last.as_ref().is_some_and(|l| *l >= key) {
            return Err(SnapshotError::Corrupt(
                "bucket keys out of order".to_string(),
            ));
        }
        self.last = Some(key.clone());
        let size = ELEMENT + key.len() + value.len();
        if !self.leaf.is_empty() && self.leaf_bytes + size > PAGE_SIZE {
            self.flush_leaf()?;
        }
        self.leaf_bytes += size;
        self.leaf.push((key, value));
        Ok(())
    }

    fn flush_leaf(&mut self) -> Result<(), SnapshotError> {
        let pgid = *self.next;
        let page = leaf_page(pgid, &self.leaf, 0);
        *self.next += (page.len() / PAGE_SIZE) as u64;
        self.sink.put(&page)?;
        let first = std::mem::take(&mut self.leaf)
            .into_iter()
            .next()
            .map(|(k, _)| k)
            .unwrap_or_default();
        self.leaf_bytes = HEADER;
        self.add_branch(0, first, pgid)
    }

    fn add_branch(&mut self, level: usize, key: Vec<u8>, child: u64) -> Result<(), SnapshotError> {
        if self.levels.len() == level {
            self.levels.push((Vec::new(), HEADER));
        }
        let size = ELEMENT + key.len();
        if !self.levels[level].0.is_empty() && self.levels[level].1 + size > PAGE_SIZE {
            self.flush_branch(level)?;
        }
        let (entries, bytes) = &mut self.levels[level];
        *bytes += size;
        entries.push((key, child));
        Ok(())
    }

    fn flush_branch(&mut self, level: usize) -> Result<(), SnapshotError> {
        let entries = std::mem::take(&mut self.levels[level].0);
        self.levels[level].1 = HEADER;
        let pgid = *self.next;
        let page = branch_page(pgid, &entries);
        *self.next += (page.len() / PAGE_SIZE) as u64;
        self.sink.put(&page)?;
        let first = entries
            .into_iter()
            .next()
            .map(|(k, _)| k)
            .unwrap_or_default();
        self.add_branch(level + 1, first, pgid)
    }

    /// Writes what is left and returns the tree's root page.
    fn finish(mut self) -> Result<u64, SnapshotError> {
        if !self.leaf.is_empty() || self.levels.is_empty() {
            self.flush_leaf()?;
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            if top && self.levels[level].0.len() == 1 {
                return Ok(self.levels[level].0[0].1);
            }
            self.flush_branch(level)?;
            level += 1;
        }
    }
}

fn page_header(page: &mut [u8], pgid: u64, flags: u16, count: u16, overflow: u32) {
    page[0..8].copy_from_slice(&pgid.to_le_bytes());
    page[8..10].copy_from_slice(&flags.to_le_bytes());
    page[10..12].copy_from_slice(&count.to_le_bytes());
    page[12..16].copy_from_slice(&overflow.to_le_bytes());
}

fn put_u32(page: &mut [u8], at: usize, v: usize) {
    page[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
}

/// A zeroed buffer of whole pages holding `bytes`, and its overflow count.
fn pages_for(bytes: usize) -> (Vec<u8>, u32) {
    let pages = bytes.div_ceil(PAGE_SIZE).max(1);
    (vec![0u8; pages * PAGE_SIZE], (pages - 1) as u32)
}

fn leaf_page(pgid: u64, entries: &[(Vec<u8>, Vec<u8>)], flags: u32) -> Vec<u8> {
    let data: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    let (mut page, overflow) = pages_for(HEADER + ELEMENT * entries.len() + data);
    page_header(&mut page, pgid, LEAF_PAGE, entries.len() as u16, overflow);
    let mut at = HEADER + ELEMENT * entries.len();
    for (i, (k, v)) in entries.iter().enumerate() {
        let elem = HEADER + ELEMENT * i;
        put_u32(&mut page, elem, flags as usize);
        put_u32(&mut page, elem + 4, at - elem);
        put_u32(&mut page, elem + 8, k.len());
        put_u32(&mut page, elem + 12, v.len());
        page[at..at + k.len()].copy_from_slice(k);
        at += k.len();
        page[at..at + v.len()].copy_from_slice(v);
        at += v.len();
    }
    page
}

fn branch_page(pgid: u64, entries: &[(Vec<u8>, u64)]) -> Vec<u8> {
    let data: usize = entries.iter().map(|(k, _)| k.len()).sum();
    let (mut page, overflow) = pages_for(HEADER + ELEMENT * entries.len() + data);
    page_header(&mut page, pgid, BRANCH_PAGE, entries.len() as u16, overflow);
    let mut at = HEADER + ELEMENT * entries.len();
    for (i, (k, child)) in entries.iter().enumerate() {
        let elem = HEADER + ELEMENT * i;
        put_u32(&mut page, elem, at - elem);
        put_u32(&mut page, elem + 4, k.len());
        page[elem + 8..elem + 16].copy_from_slice(&child.to_le_bytes());
        page[at..at + k.len()].copy_from_slice(k);
        at += k.len();
    }
    page
}

fn meta_page(pgid: u64, txid: u64, pages: u64) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE];
    page_header(&mut page, pgid, META_PAGE, 0, 0);
    let m = &mut page[HEADER..];
    m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    m[4..8].copy_from_slice(&VERSION.to_le_bytes());
    m[8..12].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    // flags (12..16) 0; root bucket: (root page, sequence 0).
    m[16..24].copy_from_slice(&ROOT_PGID.to_le_bytes());
    m[32..40].copy_from_slice(&FREELIST_PGID.to_le_bytes());
    m[40..48].copy_from_slice(&pages.to_le_bytes());
    m[48..56].copy_from_slice(&txid.to_le_bytes());
    let sum = fnv1a64(&m[..META_CHECKSUM_AT]);
    m[56..64].copy_from_slice(&sum.to_le_bytes());
    page
}

/// FNV-1a, 64 bits (Go's `hash/fnv.New64a`), the meta page checksum.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A [`PageSink`] over any writer.
pub struct WriteSink<W: io::Write>(pub W);

impl<W: io::Write> PageSink for WriteSink<W> {
    fn put(&mut self, page: &[u8]) -> Result<(), SnapshotError> {
        self.0.write_all(page)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
