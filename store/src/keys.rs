//! Order-preserving key encodings for RocksDB.
//!
//! Keys are concatenations of parts: integers big-endian (so byte order is numeric
//! order), strings escaped and terminated so that no encoded string is a prefix of
//! another (`0x00` becomes `0x00 0xFF`, and `0x00 0x01` ends the string). A prefix of
//! parts is then a prefix of bytes, which is what range and prefix scans need.

/// Appends an escaped, terminated string.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

/// Appends a big-endian u64.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Reads an escaped string from the front of `buf`; returns it and the rest.
pub fn take_str(buf: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let b = *buf.get(i)?;
        if b != 0 {
            out.push(b);
            i += 1;
            continue;
        }
        match *buf.get(i + 1)? {
            0xFF => out.push(0),
            1 => return Some((out, &buf[i + 2..])),
            _ => return None,
        }
        i += 2;
    }
}

/// Reads a big-endian u64 from the front of `buf`; returns it and the rest.
pub fn take_u64(buf: &[u8]) -> Option<(u64, &[u8])> {
    let head: [u8; 8] = buf.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(head), &buf[8..]))
}

/// The smallest key greater than every key starting with `prefix` (for range ends);
/// `None` if there is none (all bytes 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            put_str(&mut out, p);
        }
        out
    }

    /// A tiny deterministic generator of awkward strings (NULs, 0xFF, 0x01).
    fn strings() -> Vec<Vec<u8>> {
        let alphabet = [0u8, 1, 2, 0xFE, 0xFF, b'a', b'b'];
        let mut out = vec![vec![]];
        for len in 1..=3 {
            let mut idx = vec![0usize; len];
            loop {
                out.push(idx.iter().map(|&i| alphabet[i]).collect());
                let mut k = 0;
                while k < len {
                    idx[k] += 1;
                    if idx[k] < alphabet.len() {
                        break;
                    }
                    idx[k] = 0;
                    k += 1;
                }
                if k == len {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn string_encoding_preserves_order_and_round_trips() {
        let all = strings();
        for a in &all {
            let ea = enc(&[a]);
            let (back, rest) = take_str(&ea).unwrap();
            assert_eq!(&back, a);
            assert!(rest.is_empty());
            for b in &all {
                let eb = enc(&[b]);
                assert_eq!(a.cmp(b), ea.cmp(&eb), "{a:?} vs {b:?}");
                if a != b {
                    assert!(!eb.starts_with(&ea), "{a:?} encodes as a prefix of {b:?}");
                }
            }
        }
    }

    #[test]
    fn composite_keys_order_by_parts() {
        let all = strings();
        for a in all.iter().step_by(7) {
            for b in all.iter().step_by(11) {
                for (x, y) in [(1u64, 2u64), (2, 1), (5, 5)] {
                    let mut k1 = enc(&[a]);
                    put_u64(&mut k1, x);
                    let mut k2 = enc(&[b]);
                    put_u64(&mut k2, y);
                    assert_eq!((a, x).cmp(&(b, y)), k1.cmp(&k2));
                }
            }
        }
    }

    #[test]
    fn malformed_keys_are_rejected_not_panics() {
        assert!(take_str(b"abc").is_none());
        assert!(take_str(&[b'a', 0]).is_none());
        assert!(take_str(&[0, 7]).is_none());
        assert!(take_u64(&[1, 2, 3]).is_none());
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}
