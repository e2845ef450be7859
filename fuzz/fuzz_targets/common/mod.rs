//! Helpers shared by the fuzz targets (each target includes this module with `mod common;`).

/// Splits `data` into a body and the pieces it is fed in, so one fuzz input exercises both the
/// one-piece and the split path.
///
/// Layout: byte 0 holds the number of size bytes in its low 3 bits (`n = data[0] & 7`), the next
/// `n` bytes are piece sizes used in turn (a size of 0 feeds an empty slice, then one byte), and
/// the rest is the body. With `n == 0` the body is fed one byte at a time, the harshest split.
/// An empty input yields an empty body.
pub fn split_input(data: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let Some((&first, rest)) = data.split_first() else {
        return (&[], Vec::new());
    };
    let n = usize::from(first & 7).min(rest.len());
    let (sizes, body) = rest.split_at(n);
    (body, pieces(body, sizes))
}

/// Cuts `body` into pieces of the given sizes, cycling through them; empty `sizes` means 1 byte.
pub fn pieces<'a>(body: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while pos < body.len() {
        let size = if sizes.is_empty() {
            1
        } else {
            let s = usize::from(sizes[k % sizes.len()]);
            k += 1;
            if s == 0 {
                out.push(&body[pos..pos]);
                1
            } else {
                s
            }
        };
        let end = (pos + size).min(body.len());
        out.push(&body[pos..end]);
        pos = end;
    }
    out
}
