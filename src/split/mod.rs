//! The splitting stage: turns a blob's plain byte stream into literal segments
//! (tar headers, padding, anything not worth chunking) and content-defined chunks
//! (file bodies, or the whole stream when it is not a tar).

pub mod cdc;
pub mod tar;

pub use cdc::{ChunkOut, ChunkSizes, Cutter, Hash, StreamChunker};

use tar::{BodyKind, BLOCK};

/// Receives a stream's segments in order; together they are the stream, exactly.
pub trait Sink {
    type Error;
    fn literal(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
    fn chunk(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
    /// The (hash, length) of the chunk a stored recipe expects to start at
    /// this point of the stream, if any. The splitter uses it only when the
    /// bytes hash to it and FastCDC would cut there too (`Cutter::confirms`),
    /// so hints change speed, never the chunks.
    fn expected_chunk(&mut self) -> Option<(Hash, u32)> {
        None
    }
    /// A chunk whose BLAKE3 the splitter already computed (a hint that held).
    fn known_chunk(&mut self, bytes: &[u8], _hash: &Hash) -> Result<(), Self::Error> {
        self.chunk(bytes)
    }
}

/// A `Sink` as the chunker's output.
struct ToSink<'a, S>(&'a mut S);

impl<S: Sink> ChunkOut for ToSink<'_, S> {
    type Error = S::Error;
    fn chunk(&mut self, bytes: &[u8], hash: Option<&Hash>) -> Result<(), S::Error> {
        match hash {
            Some(h) => self.0.known_chunk(bytes, h),
            None => self.0.chunk(bytes),
        }
    }
    fn expected(&mut self) -> Option<(Hash, u32)> {
        self.0.expected_chunk()
    }
}

/// How a stream was split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Parsed as a tar archive to its end-of-archive marker (or to its end).
    Tar,
    /// Began as a tar but stopped being one (bad header mid-stream); the rest was
    /// chunked as plain data.
    TarThenRaw,
    /// Not a tar: chunked as plain data throughout.
    Raw,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Tar => "tar",
            Layout::TarThenRaw => "tar+raw",
            Layout::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the first 512 bytes to decide whether this is a tar.
    Start,
    Header,
    /// Extension blocks of an old GNU sparse header, then a body of `body` bytes.
    SparseExt {
        body: u64,
    },
    Body {
        remaining: u64,
        kind: BodyKind,
        size: u64,
    },
    Padding {
        remaining: u64,
    },
    /// After the end-of-archive marker, or when the stream is not (or no longer) a tar.
    Raw,
}

/// A streaming, tar-aware splitter. Feed it the plain stream in pieces of any size.
pub struct Splitter {
    state: State,
    block: Vec<u8>,
    chunker: StreamChunker,
    /// Body of the current PAX header, kept to read its `size` record.
    pax: Vec<u8>,
    pax_size: Option<u64>,
    layout: Option<Layout>,
    entries: u64,
}

impl Splitter {
    pub fn new(cutter: Cutter) -> Self {
        Splitter {
            state: State::Start,
            block: Vec::with_capacity(BLOCK),
            chunker: StreamChunker::new(cutter),
            pax: Vec::new(),
            pax_size: None,
            layout: None,
            entries: 0,
        }
    }

    /// Tar entries seen (headers of any type).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn feed<S: Sink>(&mut self, mut data: &[u8], sink: &mut S) -> Result<(), S::Error> {
        while !data.is_empty() {
            match self.state {
                State::Start | State::Header | State::SparseExt { .. } => {
                    let take = (BLOCK - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.block.len() == BLOCK {
                        self.on_block(sink)?;
                    }
                }
                State::Body {
                    remaining,
                    kind,
                    size,
                } => {
                    let take = remaining.min(data.len() as u64) as usize;
                    let (now, rest) = data.split_at(take);
                    data = rest;
                    match kind {
                        BodyKind::Data => self.chunker.push_to(now, &mut ToSink(sink))?,
                        BodyKind::Pax => {
                            self.pax.extend_from_slice(now);
                            sink.literal(now)?;
                        }
                        BodyKind::Meta => sink.literal(now)?,
                    }
                    let remaining = remaining - take as u64;
                    self.state = State::Body {
                        remaining,
                        kind,
                        size,
                    };
                    if remaining == 0 {
                        self.end_body(kind, size, sink)?;
                    }
                }
                State::Padding { remaining } => {
                    let take = remaining.min(data.len() as u64) as usize;
                    sink.literal(&data[..take])?;
                    data = &data[take..];
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Padding { remaining }
                    };
                }
                State::Raw => {
                    self.chunker.push_to(data, &mut ToSink(sink))?;
                    data = &[];
                }
            }
        }
        Ok(())
    }

    /// Ends the stream. Whatever was left unfinished (a truncated tar, a partial
    /// block) is emitted as it is.
    pub fn finish<S: Sink>(&mut self, sink: &mut S) -> Result<Layout, S::Error> {
        if !self.block.is_empty() {
            let block = std::mem::take(&mut self.block);
            self.switch_to_raw();
            self.chunker.push_to(&block, &mut ToSink(sink))?;
        }
        self.chunker.finish_to(&mut ToSink(sink))?;
        Ok(self.layout.unwrap_or(Layout::Raw))
    }

    fn switch_to_raw(&mut self) {
        self.layout = Some(match self.layout {
            None | Some(Layout::Raw) => Layout::Raw,
            Some(Layout::Tar) | Some(Layout::TarThenRaw) => Layout::TarThenRaw,
        });
        self.state = State::Raw;
    }

    fn on_block<S: Sink>(&mut self, sink: &mut S) -> Result<(), S::Error> {
        let block: &[u8; BLOCK] = self.block[..].try_into().expect("a full block");
        if let State::SparseExt { body } = self.state {
            sink.literal(block)?;
            if block[504] == 0 {
                self.start_body(body, BodyKind::Data, sink)?;
            }
            self.block.clear();
            return Ok(());
        }
        let header = if tar::is_zero_block(block) {
            None
        } else {
            tar::parse_header(block)
        };
        let Some(h) = header else {
            // End-of-archive marker, or not a tar (any more): the rest is plain data.
            let block = std::mem::take(&mut self.block);
            if self.state == State::Header && tar::is_zero_block(&block) {
                self.state = State::Raw;
            } else {
                self.switch_to_raw();
            }
            return self.chunker.push_to(&block, &mut ToSink(sink));
        };
        if self.layout.is_none() {
            self.layout = Some(Layout::Tar);
        }
        self.entries += 1;
        sink.literal(block)?;
        self.block.clear();
        let pax_size = match h.typeflag {
            b'x' | b'g' | b'L' | b'K' => None,
            _ => self.pax_size.take(),
        };
        let (size, kind) = tar::body_of(&h, pax_size);
        if h.sparse_extended {
            self.state = State::SparseExt { body: size };
            return Ok(());
        }
        self.start_body(size, kind, sink)
    }

    fn start_body<S: Sink>(
        &mut self,
        size: u64,
        kind: BodyKind,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        self.state = State::Body {
            remaining: size,
            kind,
            size,
        };
        if size == 0 {
            self.end_body(kind, 0, sink)?;
        }
        Ok(())
    }

    fn end_body<S: Sink>(
        &mut self,
        kind: BodyKind,
        size: u64,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        match kind {
            BodyKind::Data => self.chunker.finish_to(&mut ToSink(sink))?,
            BodyKind::Pax => {
                self.pax_size = tar::pax_size(&self.pax);
                self.pax.clear();
            }
            BodyKind::Meta => {}
        }
        let pad = tar::padding(size);
        self.state = if pad == 0 {
            State::Header
        } else {
            State::Padding { remaining: pad }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
