//! The bit writer (gzip's bits.c): LSB first, as deflate wants. gzip keeps
//! 16 bits in hand; a wider accumulator gives the same byte stream.

pub(crate) struct Bits {
    acc: u64,
    n: u32,
    pub(crate) out: Vec<u8>,
}

impl Bits {
    pub(crate) fn new() -> Bits {
        Bits {
            acc: 0,
            n: 0,
            out: Vec::new(),
        }
    }

    /// `send_bits`: `len` (1..=16) low bits of `value`, which has no others.
    #[inline]
    pub(crate) fn send(&mut self, value: u32, len: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += len;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// `bi_windup`: pads to a byte boundary with zero bits.
    pub(crate) fn windup(&mut self) {
        while self.n > 0 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
        self.acc = 0;
    }

    /// `copy_block` with its header: a stored block's LEN, NLEN and bytes
    /// (the 3 block-type bits were sent before).
    pub(crate) fn stored(&mut self, data: &[u8]) {
        self.windup();
        let len = data.len() as u16;
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(&(!len).to_le_bytes());
        self.out.extend_from_slice(data);
    }
}

/// `bi_reverse`: the low `len` bits of `code`, reversed.
pub(crate) fn reverse(code: u32, len: u32) -> u32 {
    code.reverse_bits() >> (32 - len)
}
