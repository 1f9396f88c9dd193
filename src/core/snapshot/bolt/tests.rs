//! Round trips through the writer and reader, and damaged files.

use std::fs::File;

use super::reader::BoltReader;
use super::*;

type Buckets = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

fn fill<S: PageSink>(
    buckets: &Buckets,
    i: usize,
    tree: &mut TreeWriter<'_, S>,
) -> Result<(), SnapshotError> {
    for (k, v) in &buckets[i].1 {
        tree.put(k.clone(), v.clone())?;
    }
    Ok(())
}

fn write(buckets: &Buckets) -> Vec<u8> {
    let names: Vec<&[u8]> = buckets.iter().map(|(n, _)| n.as_slice()).collect();
    let mut counter = PageCounter::default();
    let layout = write_file(&mut counter, &names, None, |i, t| fill(buckets, i, t)).expect("plan");
    let mut out = WriteSink(Vec::new());
    let written =
        write_file(&mut out, &names, Some(&layout), |i, t| fill(buckets, i, t)).expect("write");
    assert_eq!(written, layout);
    assert_eq!(out.0.len() as u64, layout.bytes());
    assert_eq!(counter.bytes, layout.bytes());
    out.0
}

fn read(bytes: &[u8]) -> Result<Buckets, SnapshotError> {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("db");
    std::fs::write(&path, bytes).expect("write file");
    let r = BoltReader::open(File::open(&path).expect("open"), bytes.len() as u64)?;
    let mut out = Vec::new();
    for (name, root) in r.buckets()? {
        let mut entries = Vec::new();
        r.for_each(&root, &mut |k, v| {
            entries.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        out.push((name, entries));
    }
    Ok(out)
}

fn sample(keys: usize, value: usize) -> Buckets {
    let many = (0..keys)
        .map(|i| (format!("{i:08}").into_bytes(), vec![b'v'; value + i % 7]))
        .collect();
    vec![
        (b"empty".to_vec(), Vec::new()),
        (b"key".to_vec(), many),
        (b"meta".to_vec(), vec![(b"a".to_vec(), vec![1, 2, 3])]),
    ]
}

#[test]
fn files_read_back_as_written_at_every_size() {
    for (keys, value) in [(0, 0), (1, 10), (300, 10), (20_000, 100), (5, 20_000)] {
        let buckets = sample(keys, value);
        let bytes = write(&buckets);
        assert_eq!(read(&bytes).expect("read"), buckets, "{keys} keys");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("db");
        std::fs::write(&path, &bytes).expect("write file");
        let r =
            BoltReader::open(File::open(&path).expect("open"), bytes.len() as u64).expect("reader");
        for ((_, root), (_, entries)) in r.buckets().expect("buckets").iter().zip(&buckets) {
            let last = entries.last().map(|(k, _)| k.clone());
            assert_eq!(r.last_key(root).expect("last key"), last);
        }
    }
}

#[test]
fn meta_checksum_is_fnv1a64() {
    // Go: fnv.New64a().Sum64() of "" and of "a".
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn damaged_files_are_refused_not_trusted() {
    let good = write(&sample(2_000, 50));
    // Truncated: the meta page's page count exceeds the file.
    assert!(matches!(
        read(&good[..good.len() / 2]),
        Err(SnapshotError::Corrupt(_))
    ));
    // A flipped byte in each meta page.
    let mut metas = good.clone();
    metas[HEADER + 20] ^= 1;
    metas[PAGE_SIZE + HEADER + 20] ^= 1;
    assert!(matches!(read(&metas), Err(SnapshotError::Corrupt(_))));
    // Every single-byte change in the data pages either reads or is
    // refused: never a panic.
    for at in (2 * PAGE_SIZE..good.len()).step_by(97) {
        let mut bad = good.clone();
        bad[at] = bad[at].wrapping_add(0x5b);
        let _ = read(&bad);
    }
    assert!(matches!(read(b"short"), Err(SnapshotError::Corrupt(_))));
}
