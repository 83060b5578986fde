//! Listing and comparing phone trees (the tests' and the simulator's checks).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

pub fn list_files(root: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, u64)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("non-UTF-8 file name under {}", dir.display()),
            )
        })?;
        let rel = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else if file_type.is_file() {
            out.push((rel, entry.metadata()?.len()));
        }
    }
    Ok(())
}

/// Compares two directory trees byte for byte (regular files only, as [`list_files`] sees
/// them) and returns, sorted, the relative paths whose contents differ, that are missing
/// from `b`, or that are extra in `b`. Files are streamed, never loaded whole.
pub fn diff_trees(a: &Path, b: &Path) -> io::Result<Vec<String>> {
    let left = list_files(a)?;
    let right = list_files(b)?;
    let mut diffs = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < left.len() || j < right.len() {
        match (left.get(i), right.get(j)) {
            (Some((pa, sa)), Some((pb, sb))) if pa == pb => {
                if sa != sb || !same_contents(&a.join(pa), &b.join(pb))? {
                    diffs.push(pa.clone());
                }
                i += 1;
                j += 1;
            }
            (Some((pa, _)), Some((pb, _))) if pa < pb => {
                diffs.push(pa.clone());
                i += 1;
            }
            (Some(_), Some((pb, _))) | (None, Some((pb, _))) => {
                diffs.push(pb.clone());
                j += 1;
            }
            (Some((pa, _)), None) => {
                diffs.push(pa.clone());
                i += 1;
            }
            (None, None) => unreachable!("loop condition guarantees one side remains"),
        }
    }
    diffs.sort();
    Ok(diffs)
}

pub(super) fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    const BUF: usize = 64 * 1024;
    let mut fa = File::open(a)?;
    let mut fb = File::open(b)?;
    let mut ba = vec![0u8; BUF];
    let mut bb = vec![0u8; BUF];
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
