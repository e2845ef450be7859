//! Payload masking (RFC 6455 §5.3) and the masking keys a client draws for its frames.
//!
//! Masking runs over every byte a client sends and every byte a server receives, so it XORs
//! eight bytes at a time as one `u64` (the compiler widens this further) instead of byte by byte.
//! Keys come from the OS random source in batches: RFC 6455 asks for unpredictable keys, and one
//! `getrandom` call per 64 frames keeps the syscall off the per-frame path.

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;

/// XORs `buf` with `key` repeated; the same call masks and unmasks. The key's first byte applies
/// to `buf[0]`: to continue a payload at offset `n`, pass the key rotated left by `n % 4`.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(word) = <&mut [u8; 8]>::try_from(chunk) {
            *word = (u64::from_ne_bytes(*word) ^ wide).to_ne_bytes();
        }
    }
    // The remainder starts at a multiple of 8, so the key phase restarts at 0.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// The key rotated so that it applies at payload offset `offset`.
pub(crate) fn key_at(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut k = key;
    k.rotate_left(offset % 4);
    k
}

/// Keys drawn per batch: 64 frames per refill.
const KEY_POOL_BYTES: usize = 256;

/// Masking keys for outgoing client frames.
pub struct MaskKeys {
    pool: [u8; KEY_POOL_BYTES],
    next: usize,
}

impl Default for MaskKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MaskKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKeys")
    }
}

impl MaskKeys {
    pub fn new() -> MaskKeys {
        MaskKeys {
            pool: [0; KEY_POOL_BYTES],
            // Empty: the first key triggers the first refill.
            next: KEY_POOL_BYTES,
        }
    }

    pub fn next_key(&mut self) -> [u8; 4] {
        if self.next + 4 > KEY_POOL_BYTES {
            random_bytes(&mut self.pool);
            self.next = 0;
        }
        let mut key = [0u8; 4];
        if let Some(src) = self.pool.get(self.next..self.next + 4) {
            key.copy_from_slice(src);
        }
        self.next += 4;
        key
    }
}

/// Fills `buf` from the OS random source. Should that ever fail, the bytes come from a clock-seeded
/// mixer instead of a panic: unpredictable keys guard intermediaries against scripted clients
/// (RFC 6455 §10.3), which the gateway is not, so weaker keys beat taking the core down.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    if OsRng.try_fill_bytes(buf).is_ok() {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut state = nanos ^ (buf.as_ptr() as u64).rotate_left(32);
    for chunk in buf.chunks_mut(8) {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        for (b, r) in chunk.iter_mut().zip(z.to_le_bytes()) {
            *b = r;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn mask_bytewise(buf: &mut [u8], key: [u8; 4]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }

    #[test]
    fn matches_bytewise_masking_and_round_trips() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let lens = (0..=70).chain([127, 1000, 65_535, 65_536, 1 << 20]);
        for len in lens {
            let original: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let mut fast = original.clone();
            apply_mask(&mut fast, key);
            let mut slow = original.clone();
            mask_bytewise(&mut slow, key);
            assert_eq!(fast, slow, "len {len}");
            if len > 0 {
                assert_ne!(fast, original, "len {len}");
            }
            apply_mask(&mut fast, key);
            assert_eq!(fast, original, "len {len}");
        }
    }

    #[test]
    fn a_payload_masked_in_pieces_equals_masked_whole() {
        let key = [1, 2, 3, 4];
        let original: Vec<u8> = (0..=200u8).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key);
        for split in 0..original.len() {
            let mut pieces = original.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, key_at(key, 0));
            apply_mask(b, key_at(key, split));
            assert_eq!(pieces, whole, "split {split}");
        }
    }

    #[test]
    fn rfc_hello_masks_to_the_rfc_bytes() {
        // RFC 6455 §5.7: "Hello" with key 37 fa 21 3d.
        let mut p = *b"Hello";
        apply_mask(&mut p, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(p, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn keys_vary() {
        let mut keys = MaskKeys::new();
        let drawn: Vec<[u8; 4]> = (0..200).map(|_| keys.next_key()).collect();
        let distinct: std::collections::HashSet<_> = drawn.iter().collect();
        // 200 draws of 32 random bits: a repeat is a ~5e-6 event, all-equal means no refill.
        assert!(distinct.len() >= 199, "{}", distinct.len());
    }
}
