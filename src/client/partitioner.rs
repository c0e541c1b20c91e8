//! Partition choice as the Java producer makes it, so load generated here lands where a Java
//! client's would: keyed records go to `toPositive(murmur2(key)) % partitions`; unkeyed ones
//! stick to one partition until about `batch.size` bytes went to it, then move to another
//! (the built-in "uniform sticky" partitioner of KIP-480/KIP-794, without the adaptive weights).

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`): seed 0x9747b28c,
/// little-endian words, 32-bit wrapping arithmetic, logical shifts.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        let mut k = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = words.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// `Utils.toPositive`: clears the sign bit.
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The Java producer's partition for a key.
pub fn partition_for_key(key: &[u8], partitions: usize) -> usize {
    to_positive(murmur2(key)) as usize % partitions.max(1)
}

/// Sticky choice for unkeyed records: stays on a partition until `batch_size` bytes went to it.
pub struct StickyPartitioner {
    partitions: usize,
    batch_size: usize,
    current: usize,
    produced: usize,
    rng: u64,
}

impl StickyPartitioner {
    pub fn new(partitions: usize, batch_size: usize, seed: u64) -> Self {
        let mut s = StickyPartitioner {
            partitions: partitions.max(1),
            batch_size: batch_size.max(1),
            current: 0,
            produced: 0,
            rng: seed | 1,
        };
        s.current = s.random() % s.partitions;
        s
    }

    fn random(&mut self) -> usize {
        // xorshift64: a fast, seedable choice; the distribution only needs to be uniform.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 1) as usize
    }

    /// The partition for the next unkeyed record of `bytes` bytes.
    pub fn next(&mut self, bytes: usize) -> usize {
        if self.produced >= self.batch_size {
            self.produced = 0;
            self.current = self.random() % self.partitions;
        }
        self.produced += bytes;
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_utils_test() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    /// librdkafka's `unittest_murmur2` (values compared as int32).
    #[test]
    fn murmur2_matches_librdkafka_vectors() {
        let cases: [(&str, u32); 11] = [
            ("kafka", 0xd067_cf64),
            ("giberish123456789", 0x8f55_2b0c),
            ("1234", 0x9fc9_7b14),
            ("234", 0xe7c0_09ca),
            ("34", 0x8739_30da),
            ("4", 0x5a4b_5ca1),
            ("PreAmbleWillBeRemoved,ThePrePartThatIs", 0x7842_4f1c),
            ("reAmbleWillBeRemoved,ThePrePartThatIs", 0x4a62_b377),
            ("eAmbleWillBeRemoved,ThePrePartThatIs", 0xe0e4_e09e),
            ("AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8_b43f),
            ("", 0x106e_08d9),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()), expected as i32, "{key:?}");
        }
    }

    /// librdkafka's `0048-partitioner` (Java `toPositive(murmur2)` % 7 and % 17).
    #[test]
    fn partitions_match_the_java_client() {
        let cases: [(&str, u32); 4] = [
            ("", 0x106e_08d9),
            ("23456", 0x058d_780f),
            (
                "this is another string with more length to it perhaps",
                0x4f77_03da,
            ),
            ("hejsan", 0x5ec1_9395),
        ];
        for (key, positive) in cases {
            assert_eq!(
                to_positive(murmur2(key.as_bytes())) as u32,
                positive,
                "{key:?}"
            );
            for n in [7, 17] {
                assert_eq!(
                    partition_for_key(key.as_bytes(), n),
                    positive as usize % n,
                    "{key:?} over {n}"
                );
            }
        }
    }

    #[test]
    fn sticky_moves_after_a_batch_worth() {
        let mut p = StickyPartitioner::new(8, 1000, 42);
        let first = p.next(400);
        assert_eq!(p.next(400), first);
        assert_eq!(
            p.next(400),
            first,
            "still below batch.size before this record"
        );
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            seen.insert(p.next(400));
        }
        assert_eq!(seen.len(), 8, "every partition gets its turn");
    }
}
