//! The framing shared by files and records that carry an rkyv archive: 4 magic bytes, u16
//! version, u32 CRC-32 (IEEE) of the payload, then the payload. [`Seal::open`] checks all
//! three before anything reads the payload, and hands it back aligned as rkyv needs, so that
//! damaged bytes are refused with a message naming what they were meant to be.

const HEADER: usize = 10;

/// What one kind of sealed payload is.
#[derive(Clone, Copy, Debug)]
pub struct Seal {
    pub magic: &'static [u8; 4],
    pub version: u16,
    /// Named in errors: "not a {what}".
    pub what: &'static str,
}

impl Seal {
    pub fn wrap(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(self.magic);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    pub fn open(&self, bytes: &[u8]) -> Result<rkyv::util::AlignedVec<16>, String> {
        let what = self.what;
        if bytes.len() < HEADER || &bytes[..4] != self.magic {
            return Err(format!("not a {what}"));
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version != self.version {
            return Err(format!("unknown {what} version {version}"));
        }
        let crc = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        let payload = &bytes[HEADER..];
        if crc32fast::hash(payload) != crc {
            return Err(format!("{what} checksum mismatch"));
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        Ok(aligned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEAL: Seal = Seal {
        magic: b"TEST",
        version: 3,
        what: "test file",
    };

    #[test]
    fn a_sealed_payload_opens_and_damage_is_named() {
        let sealed = SEAL.wrap(b"payload");
        assert_eq!(&SEAL.open(&sealed).unwrap()[..], b"payload");
        let mut bad = sealed.clone();
        bad[12] ^= 1;
        assert_eq!(SEAL.open(&bad).unwrap_err(), "test file checksum mismatch");
        let other = Seal { version: 4, ..SEAL };
        assert_eq!(
            other.open(&sealed).unwrap_err(),
            "unknown test file version 3"
        );
        assert_eq!(SEAL.open(b"TES").unwrap_err(), "not a test file");
    }
}
