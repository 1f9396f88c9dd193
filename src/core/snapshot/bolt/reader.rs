//! The validating bbolt reader (see the parent module for the format and
//! what is checked).

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{
    fnv1a64, BRANCH_PAGE, BUCKET_LEAF, ELEMENT, HEADER, LEAF_PAGE, MAGIC, MAX_DEPTH,
    MAX_PAGE_BYTES, META_CHECKSUM_AT, VERSION,
};
use crate::core::snapshot::SnapshotError;

/// What a reader calls for each key and value of a bucket.
pub type VisitKv<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), SnapshotError> + 'a;
/// What the tree walk calls for each leaf element (key, value, flags).
type VisitElement<'a> = dyn FnMut(&[u8], &[u8], u32) -> Result<(), SnapshotError> + 'a;

/// A bucket found in a file: its root page, or its inline page's bytes.
#[derive(Debug, Clone)]
pub enum BucketRoot {
    /// The root page id.
    Page(u64),
    /// An inline bucket's page (header and elements).
    Inline(Vec<u8>),
}

/// A bbolt file opened for reading (see the module docs for what is checked).
pub struct BoltReader {
    file: File,
    /// Bytes of the database proper (a trailing checksum excluded).
    len: u64,
    page_size: u64,
    /// Pages the meta page says exist.
    pages: u64,
    root: u64,
    /// Pages read in this pass (a bit per page): a page referenced twice,
    /// or overlapping another's overflow, is refused, so one pass reads
    /// each byte of the file at most once whatever the file claims.
    seen: RefCell<Vec<u64>>,
}

fn corrupt(msg: String) -> SnapshotError {
    SnapshotError::Corrupt(msg)
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// One page's header fields.
struct PageHeader {
    flags: u16,
    count: usize,
}

fn parse_header(page: &[u8]) -> PageHeader {
    PageHeader {
        flags: le_u16(page, 8),
        count: usize::from(le_u16(page, 10)),
    }
}

impl BoltReader {
    /// Opens the database in the first `len` bytes of `file`, choosing the
    /// valid meta page with the higher transaction id, as bbolt does.
    ///
    /// # Errors
    /// I/O errors; [`SnapshotError::Corrupt`] when no meta page is valid.
    pub fn open(file: File, len: u64) -> Result<Self, SnapshotError> {
        let mut best: Option<(u64, Self)> = None;
        let mut why = String::from("file too small for a bbolt database");
        let mut first = [0u8; 64 + HEADER];
        if len < first.len() as u64 {
            return Err(corrupt(why));
        }
        file.read_exact_at(&mut first, 0)?;
        let claimed = u64::from(le_u32(&first, HEADER + 8));
        for (i, offset) in [(0u64, 0u64), (1, claimed)] {
            let mut buf = [0u8; 64 + HEADER];
            if !(512..=65536).contains(&claimed) || !claimed.is_power_of_two() {
                why = format!("meta page 0 gives an invalid page size {claimed}");
                break;
            }
            if offset + buf.len() as u64 > len {
                why = format!("meta page {i} lies beyond the end of the file");
                continue;
            }
            file.read_exact_at(&mut buf, offset)?;
            let m = &buf[HEADER..];
            if le_u32(m, 0) != MAGIC {
                why = format!("meta page {i}: not a bbolt file (bad magic)");
                continue;
            }
            if le_u32(m, 4) != VERSION {
                why = format!("meta page {i}: unsupported bbolt version {}", le_u32(m, 4));
                continue;
            }
            if fnv1a64(&m[..META_CHECKSUM_AT]) != le_u64(m, META_CHECKSUM_AT) {
                why = format!("meta page {i}: checksum mismatch");
                continue;
            }
            let page_size = u64::from(le_u32(m, 8));
            let pages = le_u64(m, 40);
            if page_size != claimed || pages.saturating_mul(page_size) > len {
                why = format!(
                    "meta page {i} claims {pages} pages of {page_size} bytes; the file holds {len} bytes"
                );
                continue;
            }
            let txid = le_u64(m, 48);
            let reader = Self {
                file: file.try_clone()?,
                len,
                page_size,
                pages,
                root: le_u64(m, 16),
                seen: RefCell::new(Vec::new()),
            };
            if best.as_ref().is_none_or(|(t, _)| txid > *t) {
                best = Some((txid, reader));
            }
        }
        best.map(|(_, r)| r).ok_or_else(|| corrupt(why))
    }

    /// Bytes of the database: the page count times the page size.
    pub fn size(&self) -> u64 {
        self.pages * self.page_size
    }

    /// The top-level buckets, by name, in key order.
    ///
    /// # Errors
    /// I/O errors; [`SnapshotError::Corrupt`] for a malformed root bucket.
    pub fn buckets(&self) -> Result<Vec<(Vec<u8>, BucketRoot)>, SnapshotError> {
        let mut out = Vec::new();
        // A new pass: every bucket's pages may be read once more.
        *self.seen.borrow_mut() = vec![0; usize::try_from(self.pages.div_ceil(64)).unwrap_or(0)];
        let mut last = None;
        self.walk_page(self.root, 0, &mut last, &mut |k, v, flags| {
            if flags & BUCKET_LEAF != 0 {
                out.push((k.to_vec(), bucket_root(k, v)?));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f(key, value)` for every key of the bucket in order (nested
    /// buckets are skipped). Within one pass (since [`Self::buckets`]) each
    /// page is read once: walking a bucket twice needs `buckets` again.
    ///
    /// # Errors
    /// I/O errors, [`SnapshotError::Corrupt`] and `f`'s errors.
    pub fn for_each(&self, bucket: &BucketRoot, f: &mut VisitKv<'_>) -> Result<(), SnapshotError> {
        let mut last = None;
        let mut leaf = |k: &[u8], v: &[u8], flags: u32| {
            if flags & BUCKET_LEAF == 0 {
                f(k, v)
            } else {
                Ok(())
            }
        };
        match bucket {
            BucketRoot::Page(pgid) => self.walk_page(*pgid, 0, &mut last, &mut leaf),
            BucketRoot::Inline(page) => {
                let children = self.walk(page, "an inline bucket", 0, &mut last, &mut leaf)?;
                for child in children {
                    self.walk_page(child, 1, &mut last, &mut leaf)?;
                }
                Ok(())
            }
        }
    }

    /// The greatest key of a bucket (`None` when it is empty), reading one
    /// page per tree level.
    ///
    /// # Errors
    /// I/O errors and [`SnapshotError::Corrupt`].
    pub fn last_key(&self, bucket: &BucketRoot) -> Result<Option<Vec<u8>>, SnapshotError> {
        let mut page = match bucket {
            BucketRoot::Page(pgid) => self.read_page(*pgid)?,
            BucketRoot::Inline(page) => page.clone(),
        };
        for _ in 0..=MAX_DEPTH {
            if page.len() < HEADER {
                return Err(corrupt("a page shorter than its header".to_string()));
            }
            let h = parse_header(&page);
            if h.count == 0 {
                return Ok(None);
            }
            let elem = HEADER + (h.count - 1) * ELEMENT;
            if elem + ELEMENT > page.len() {
                return Err(corrupt("a page's elements overflow it".to_string()));
            }
            match h.flags {
                LEAF_PAGE => {
                    let pos = le_u32(&page, elem + 4) as usize;
                    let ksize = le_u32(&page, elem + 8) as usize;
                    let start = elem.saturating_add(pos);
                    return match page.get(start..start.saturating_add(ksize)) {
                        Some(key) => Ok(Some(key.to_vec())),
                        None => Err(corrupt("a leaf element points outside its page".into())),
                    };
                }
                BRANCH_PAGE => page = self.read_page(le_u64(&page, elem + 8))?,
                other => {
                    return Err(corrupt(format!(
                        "expected a leaf or branch page, found flags {other:#x}"
                    )))
                }
            }
        }
        Err(corrupt(format!("a tree deeper than {MAX_DEPTH} levels")))
    }

    fn read_page(&self, pgid: u64) -> Result<Vec<u8>, SnapshotError> {
        if pgid < 2 || pgid >= self.pages {
            return Err(corrupt(format!(
                "page {pgid} is referenced but outside the tree (the file has {} pages)",
                self.pages
            )));
        }
        let offset = pgid * self.page_size;
        let mut header = [0u8; HEADER];
        self.file.read_exact_at(&mut header, offset)?;
        let overflow = u64::from(le_u32(&header, 12));
        let bytes = (overflow + 1).saturating_mul(self.page_size);
        if bytes > MAX_PAGE_BYTES || offset.saturating_add(bytes) > self.len {
            return Err(corrupt(format!(
                "page {pgid} claims {overflow} overflow pages beyond the end of the file"
            )));
        }
        let id = le_u64(&header, 0);
        if id != pgid {
            return Err(corrupt(format!(
                "page {pgid} identifies itself as page {id}"
            )));
        }
        let mut page = vec![0u8; bytes as usize];
        self.file.read_exact_at(&mut page, offset)?;
        Ok(page)
    }

    /// Marks pages `pgid..=pgid + overflow` read in this pass.
    fn mark(&self, pgid: u64, overflow: u64) -> Result<(), SnapshotError> {
        let mut seen = self.seen.borrow_mut();
        for p in pgid..=pgid.saturating_add(overflow) {
            let (word, bit) = ((p / 64) as usize, p % 64);
            let Some(w) = seen.get_mut(word) else {
                return Err(corrupt(format!("page {p} lies beyond the tree")));
            };
            if *w & (1 << bit) != 0 {
                return Err(corrupt(format!(
                    "page {p} is referenced twice (a loop, or overlapping pages)"
                )));
            }
            *w |= 1 << bit;
        }
        Ok(())
    }

    /// Walks the tree under page `pgid`: its page is dropped before its
    /// children are read, so one page is held at a time.
    fn walk_page(
        &self,
        pgid: u64,
        depth: usize,
        last: &mut Option<Vec<u8>>,
        f: &mut VisitElement<'_>,
    ) -> Result<(), SnapshotError> {
        if depth > MAX_DEPTH {
            return Err(corrupt(format!(
                "page {pgid}: the tree is deeper than {MAX_DEPTH} levels"
            )));
        }
        let page = self.read_page(pgid)?;
        self.mark(pgid, (page.len() as u64 / self.page_size).saturating_sub(1))?;
        let children = self.walk(&page, &format!("page {pgid}"), depth, last, f)?;
        drop(page);
        for child in children {
            self.walk_page(child, depth + 1, last, f)?;
        }
        Ok(())
    }

    /// Calls `f` for a leaf page's elements, or returns a branch page's
    /// children (keys checked in order).
    fn walk(
        &self,
        page: &[u8],
        name: &str,
        depth: usize,
        last: &mut Option<Vec<u8>>,
        f: &mut VisitElement<'_>,
    ) -> Result<Vec<u64>, SnapshotError> {
        if depth > MAX_DEPTH {
            return Err(corrupt(format!(
                "{name}: the tree is deeper than {MAX_DEPTH} levels"
            )));
        }
        if page.len() < HEADER {
            return Err(corrupt(format!("{name}: shorter than a page header")));
        }
        let h = parse_header(page);
        if HEADER + h.count * ELEMENT > page.len() {
            return Err(corrupt(format!(
                "{name}: {} elements do not fit in the page",
                h.count
            )));
        }
        let slice = |elem: usize, pos: usize, n: usize| -> Result<&[u8], SnapshotError> {
            let start = elem.checked_add(pos);
            match start.and_then(|s| s.checked_add(n).map(|e| (s, e))) {
                Some((s, e)) if e <= page.len() => Ok(&page[s..e]),
                _ => Err(corrupt(format!(
                    "{name}: an element points outside the page"
                ))),
            }
        };
        match h.flags {
            LEAF_PAGE => {
                for i in 0..h.count {
                    let elem = HEADER + i * ELEMENT;
                    let flags = le_u32(page, elem);
                    let pos = le_u32(page, elem + 4) as usize;
                    let ksize = le_u32(page, elem + 8) as usize;
                    let vsize = le_u32(page, elem + 12) as usize;
                    let key = slice(elem, pos, ksize)?;
                    let value = slice(elem, pos.saturating_add(ksize), vsize)?;
                    if last.as_deref().is_some_and(|l| l >= key) {
                        return Err(corrupt(format!("{name}: keys out of order")));
                    }
                    *last = Some(key.to_vec());
                    f(key, value, flags)?;
                }
                Ok(Vec::new())
            }
            BRANCH_PAGE => {
                // Keys ascend across children; each leaf checks its own
                // against the last key seen before it.
                let mut children = Vec::with_capacity(h.count);
                let mut prev: Option<&[u8]> = None;
                for i in 0..h.count {
                    let elem = HEADER + i * ELEMENT;
                    let pos = le_u32(page, elem) as usize;
                    let ksize = le_u32(page, elem + 4) as usize;
                    let key = slice(elem, pos, ksize)?;
                    if prev.is_some_and(|p| p >= key) {
                        return Err(corrupt(format!("{name}: branch keys out of order")));
                    }
                    prev = Some(key);
                    children.push(le_u64(page, elem + 8));
                }
                Ok(children)
            }
            other => Err(corrupt(format!(
                "{name}: expected a leaf or branch page, found flags {other:#x}"
            ))),
        }
    }
}

/// Reads a bucket element's value: (root page, sequence) and, for an
/// inline bucket, its page.
fn bucket_root(name: &[u8], v: &[u8]) -> Result<BucketRoot, SnapshotError> {
    if v.len() < 16 {
        return Err(corrupt(format!(
            "bucket {:?}: header shorter than 16 bytes",
            String::from_utf8_lossy(name)
        )));
    }
    match le_u64(v, 0) {
        0 => Ok(BucketRoot::Inline(v[16..].to_vec())),
        root => Ok(BucketRoot::Page(root)),
    }
}
