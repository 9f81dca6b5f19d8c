//! The glass-to-glass meter's stamp: the wall-clock time a frame was captured, painted into the
//! frame itself as a row of black and white blocks that survive H.264 at ordinary bitrates. A
//! viewer that reads the blocks back when it displays the frame knows how old the picture is;
//! on one machine (loopback) both ends share a clock, so no synchronisation is needed.
//!
//! Layout (top-left corner, one row of 64 square cells, luma only, chroma neutral):
//!
//! ```text
//! cell  0..4    marker 1 0 1 1
//! cell  4..52   capture time, milliseconds since the Unix epoch, 48 bits, most significant first
//! cell 52..60   checksum: XOR of the time's six bytes
//! cell 60..64   marker 0 1 0 1
//! ```
//!
//! A cell is 16 px wide for frames ≥ 1024 px wide, 8 px for ≥ 512, else 4 ("white" is luma
//! 235, "black" 16). `gateway/web/meter.js` is the reader in the browser; it must agree with
//! this file. It also reads a strip that was scaled with its frame after painting (cells of
//! 16 × width / 1280 px): `make bench-network`'s Chromium sender paints at 1280 wide and
//! libwebrtc lowers the resolution under a narrow link.
//!
//! Pure functions; the `ferrocam-stamp-gst` crate (`stamp-gst/`) wires them into GStreamer
//! pipelines: the device's capture and the benchmarks' `stamp-source`.

/// Cells in the strip.
pub const CELLS: usize = 64;
const WHITE: u8 = 235;
const BLACK: u8 = 16;
const START: [bool; 4] = [true, false, true, true];
const END: [bool; 4] = [false, true, false, true];

/// Cell size in pixels for a frame `width` wide.
pub fn cell_size(width: usize) -> usize {
    if width >= 1024 {
        16
    } else if width >= 512 {
        8
    } else {
        4
    }
}

/// The 64 bits for capture time `ms`.
pub fn encode(ms: u64) -> [bool; CELLS] {
    let ms = ms & 0xFFFF_FFFF_FFFF;
    let checksum = ms.to_be_bytes()[2..].iter().fold(0u8, |acc, b| acc ^ b);
    let mut bits = [false; CELLS];
    bits[..4].copy_from_slice(&START);
    for i in 0..48 {
        bits[4 + i] = (ms >> (47 - i)) & 1 == 1;
    }
    for i in 0..8 {
        bits[52 + i] = (checksum >> (7 - i)) & 1 == 1;
    }
    bits[60..].copy_from_slice(&END);
    bits
}

/// The capture time in `bits`, if the markers and the checksum hold.
pub fn decode(bits: &[bool; CELLS]) -> Option<u64> {
    if bits[..4] != START || bits[60..] != END {
        return None;
    }
    let ms = bits[4..52]
        .iter()
        .fold(0u64, |acc, &b| (acc << 1) | u64::from(b));
    let checksum = bits[52..60]
        .iter()
        .fold(0u8, |acc, &b| (acc << 1) | u8::from(b));
    let expected = ms.to_be_bytes()[2..].iter().fold(0u8, |acc, b| acc ^ b);
    (checksum == expected).then_some(ms)
}

/// Paints the strip for `ms` into an I420 frame's planes.
pub fn paint(y: &mut [u8], y_stride: usize, uv: [(&mut [u8], usize); 2], width: usize, ms: u64) {
    let cell = cell_size(width);
    for (i, bit) in encode(ms).iter().enumerate() {
        let value = if *bit { WHITE } else { BLACK };
        for row in 0..cell {
            let start = row * y_stride + i * cell;
            if let Some(span) = y.get_mut(start..start + cell) {
                span.fill(value);
            }
        }
    }
    // Neutral chroma under the strip, so colour from the picture cannot tip a cell.
    for (plane, stride) in uv {
        for row in 0..cell / 2 {
            let start = row * stride;
            if let Some(span) = plane.get_mut(start..start + CELLS * cell / 2) {
                span.fill(128);
            }
        }
    }
}

/// Reads the strip from a luma plane (for tests and Rust-side readers).
pub fn read(y: &[u8], y_stride: usize, width: usize) -> Option<u64> {
    let cell = cell_size(width);
    let mut bits = [false; CELLS];
    for (i, bit) in bits.iter_mut().enumerate() {
        let at = (cell / 2) * y_stride + i * cell + cell / 2;
        *bit = *y.get(at)? > 128;
    }
    decode(&bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_corruption_is_caught() {
        let ms = 1_795_000_000_123;
        let bits = encode(ms);
        assert_eq!(decode(&bits), Some(ms));
        for flip in [0, 10, 30, 55, 62] {
            let mut bad = bits;
            bad[flip] = !bad[flip];
            assert_eq!(decode(&bad), None, "flip at {flip} went unnoticed");
        }
    }

    #[test]
    fn a_painted_frame_reads_back() {
        let (w, h) = (1280usize, 720usize);
        let mut y = vec![90u8; w * h];
        let mut u = vec![200u8; w * h / 4];
        let mut v = vec![30u8; w * h / 4];
        paint(&mut y, w, [(&mut u, w / 2), (&mut v, w / 2)], w, 42_424_242);
        assert_eq!(read(&y, w, w), Some(42_424_242));
        assert_eq!(u[0], 128);
        assert_eq!(read(&vec![90u8; w * h], w, w), None);
    }
}
