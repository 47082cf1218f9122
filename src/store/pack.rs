//! Pack files: append-only files of block records. A block holds several chunks
//! compressed together as one zstd frame (small chunks compress badly alone).
//!
//! Record layout (little-endian):
//!   magic "STRB" | version u8 | 3 reserved | n u32 | plain_len u32 | comp_len u32 | crc32c u32
//!   n × (blake3 hash [32] | chunk len u32)
//!   zstd frame of the n chunks' plain bytes, concatenated
//! The crc32c covers every byte of the record but the crc field itself, so a pack
//! can be scanned and checked without the index.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 4] = b"STRB";
pub const HEADER_LEN: usize = 24;
const ENTRY_LEN: usize = 36;
/// Upper bound on one record's plain bytes; blocks are far smaller in practice.
pub const MAX_BLOCK_PLAIN: u32 = 64 << 20;

pub use crate::split::Hash;

/// Where a chunk's bytes are: the block record that holds it, and its place in
/// the block's plain bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLoc {
    pub pack: u32,
    pub block_offset: u64,
    pub block_len: u32,
    pub offset_in_block: u32,
    pub len: u32,
}

impl ChunkLoc {
    pub const ENCODED_LEN: usize = 24;

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[0..4].copy_from_slice(&self.pack.to_le_bytes());
        b[4..12].copy_from_slice(&self.block_offset.to_le_bytes());
        b[12..16].copy_from_slice(&self.block_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.offset_in_block.to_le_bytes());
        b[20..24].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != Self::ENCODED_LEN {
            return Err(Error::DataLoss(
                "chunk location record has the wrong length".into(),
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Ok(ChunkLoc {
            pack: u32_at(0),
            block_offset: u64::from_le_bytes(b[4..12].try_into().unwrap()),
            block_len: u32_at(12),
            offset_in_block: u32_at(16),
            len: u32_at(20),
        })
    }

    pub fn block_key(&self) -> (u32, u64) {
        (self.pack, self.block_offset)
    }
}

/// A block of chunks waiting to be compressed and written.
#[derive(Default)]
pub struct BlockBuilder {
    pub entries: Vec<(Hash, u32)>,
    pub plain: Vec<u8>,
}

impl BlockBuilder {
    pub fn push(&mut self, hash: Hash, data: &[u8]) {
        self.entries.push((hash, data.len() as u32));
        self.plain.extend_from_slice(data);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Encodes a block record; `compressor` is reused across blocks.
pub fn encode_block(
    block: &BlockBuilder,
    compressor: &mut zstd::bulk::Compressor<'_>,
) -> Result<Vec<u8>> {
    let payload = compressor
        .compress(&block.plain)
        .map_err(|e| Error::Internal(format!("zstd compression failed: {e}")))?;
    let mut rec = Vec::with_capacity(HEADER_LEN + block.entries.len() * ENTRY_LEN + payload.len());
    rec.extend_from_slice(MAGIC);
    rec.extend_from_slice(&[1, 0, 0, 0]);
    rec.extend_from_slice(&(block.entries.len() as u32).to_le_bytes());
    rec.extend_from_slice(&(block.plain.len() as u32).to_le_bytes());
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&[0; 4]);
    for (h, len) in &block.entries {
        rec.extend_from_slice(h);
        rec.extend_from_slice(&len.to_le_bytes());
    }
    rec.extend_from_slice(&payload);
    let crc = record_crc(&rec);
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    Ok(rec)
}

fn record_crc(rec: &[u8]) -> u32 {
    let c = crc32c::crc32c(&rec[..20]);
    crc32c::crc32c_append(c, &rec[HEADER_LEN..])
}

/// Fields of a record header, read before the rest of the record.
#[derive(Debug, Clone, Copy)]
pub struct RecordHeader {
    pub entries: u32,
    pub plain_len: u32,
    pub comp_len: u32,
}

impl RecordHeader {
    pub fn parse(h: &[u8]) -> Option<Self> {
        if h.len() < HEADER_LEN || &h[..4] != MAGIC || h[4] != 1 {
            return None;
        }
        let u = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
        let rh = RecordHeader {
            entries: u(8),
            plain_len: u(12),
            comp_len: u(16),
        };
        (rh.plain_len <= MAX_BLOCK_PLAIN && rh.entries <= rh.plain_len.max(1)).then_some(rh)
    }

    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + self.entries as u64 * ENTRY_LEN as u64 + self.comp_len as u64
    }
}

/// A decoded, verified block: every chunk's bytes hashed to its name.
pub struct DecodedBlock {
    pub entries: Vec<(Hash, u32)>,
    pub plain: Vec<u8>,
}

impl DecodedBlock {
    /// The block's chunks by where each starts in it: offset → hash, length.
    pub fn chunks_by_offset(&self) -> std::collections::HashMap<u32, (Hash, u32)> {
        let mut at = 0u32;
        let mut m = std::collections::HashMap::with_capacity(self.entries.len());
        for (h, len) in &self.entries {
            m.insert(at, (*h, *len));
            at = at.saturating_add(*len);
        }
        m
    }
}

/// Checks a record's checksum, decompresses it and verifies every chunk hash.
pub fn decode_block(rec: &[u8], what: &dyn Fn() -> String) -> Result<DecodedBlock> {
    let bad = |why: &str| Error::DataLoss(format!("{}: {why}", what()));
    let h =
        RecordHeader::parse(rec).ok_or_else(|| bad("not a block record (bad magic or header)"))?;
    if rec.len() as u64 != h.record_len() {
        return Err(bad("record length does not match its header"));
    }
    let stored = u32::from_le_bytes(rec[20..24].try_into().unwrap());
    if record_crc(rec) != stored {
        return Err(bad("checksum mismatch"));
    }
    let n = h.entries as usize;
    let mut entries = Vec::with_capacity(n);
    let mut total: u64 = 0;
    for i in 0..n {
        let e = &rec[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN];
        let len = u32::from_le_bytes(e[32..36].try_into().unwrap());
        total += len as u64;
        entries.push((e[..32].try_into().unwrap(), len));
    }
    if total != h.plain_len as u64 {
        return Err(bad("chunk lengths do not add up to the block length"));
    }
    let payload = &rec[HEADER_LEN + n * ENTRY_LEN..];
    let plain = zstd::bulk::decompress(payload, h.plain_len as usize)
        .map_err(|e| bad(&format!("zstd: {e}")))?;
    if plain.len() != h.plain_len as usize {
        return Err(bad("decompressed length differs"));
    }
    let mut off = 0usize;
    for (hash, len) in &entries {
        let data = &plain[off..off + *len as usize];
        if blake3::hash(data).as_bytes() != hash {
            return Err(bad(&format!(
                "chunk {} does not hash to its name",
                hex::encode(hash)
            )));
        }
        off += *len as usize;
    }
    Ok(DecodedBlock { entries, plain })
}

pub fn pack_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.pack"))
}

pub fn parse_pack_name(name: &str) -> Option<u32> {
    name.strip_suffix(".pack")?.parse().ok()
}

/// An open pack being appended to by one ingest at a time.
pub struct PackWriter {
    pub id: u32,
    file: File,
    path: PathBuf,
    /// Current end of the file.
    pub len: u64,
}

impl PackWriter {
    pub fn create(dir: &Path, id: u32) -> Result<Self> {
        let path = pack_path(dir, id);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        // The new name must be durable before the index can refer to it.
        sync_dir(dir)?;
        Ok(PackWriter {
            id,
            file,
            path,
            len: 0,
        })
    }

    pub fn open(dir: &Path, id: u32, len: u64) -> Result<Self> {
        let path = pack_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(PackWriter {
            id,
            file,
            path,
            len,
        })
    }

    /// Appends a record; returns its offset. On a failed write (a full disk)
    /// the file is cut back to where it was: no partial record is left.
    pub fn append(&mut self, rec: &[u8]) -> Result<u64> {
        let off = self.len;
        if let Err(e) = self.file.write_all_at(rec, off) {
            if let Err(t) = self.file.set_len(off) {
                tracing::error!(pack = self.id, error = %t, "could not cut a failed append off its pack; it is trimmed at the next start");
            }
            return Err(Error::io(
                format!("appending to {}", self.path.display()),
                e,
            ));
        }
        self.len += rec.len() as u64;
        Ok(off)
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))
    }

    /// Drops everything after `len` (bytes of an ingest that did not commit).
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        if self.len != len {
            self.file
                .set_len(len)
                .map_err(|e| Error::io(format!("truncating {}", self.path.display()), e))?;
            self.len = len;
        }
        Ok(())
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> BlockBuilder {
        let mut b = BlockBuilder::default();
        for i in 0..3u8 {
            let data = vec![i; 1000 + i as usize];
            b.push(*blake3::hash(&data).as_bytes(), &data);
        }
        b
    }

    #[test]
    fn records_round_trip_and_any_flipped_bit_is_data_loss() {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let b = block();
        let rec = encode_block(&b, &mut c).unwrap();
        let d = decode_block(&rec, &|| "test".into()).unwrap();
        assert_eq!(d.plain, b.plain);
        assert_eq!(d.entries, b.entries);
        for i in [0, 10, 21, 30, rec.len() - 1] {
            let mut bad = rec.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(decode_block(&bad, &|| "t".into()), Err(Error::DataLoss(_))),
                "byte {i}"
            );
        }
    }

    #[test]
    fn chunk_locations_encode() {
        let l = ChunkLoc {
            pack: 7,
            block_offset: 1 << 40,
            block_len: 99,
            offset_in_block: 5,
            len: 1,
        };
        assert_eq!(ChunkLoc::decode(&l.encode()).unwrap(), l);
    }
}
