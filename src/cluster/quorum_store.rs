//! The controller quorum's disk: one append-only file, `quorum.log`, in the node's metadata
//! directory (`<log.dirs>/__cluster_metadata-0`), holding raft's log entries and its hard state
//! (term, vote, commit) as frames. A round's frames are written and fdatasynced before
//! [`QuorumStore::write`] returns, which is what lets the runtime send the messages that promise
//! them. The last hard-state frame wins; entries that raft replaces (a follower's conflicting
//! tail) are cut off the file and the current hard state written again after them.
//!
//! Frame: u32 payload length, u32 CRC-32C of the payload, payload. Payload: u8 kind (1 entry:
//! u64 index, u64 term, data; 2 hard state: u64 term, u64 vote, u64 commit).
//!
//! On open, a last frame that is incomplete or fails its checksum is a write torn by a crash:
//! it is cut off with a warning naming the file and byte (nothing in it was promised, since its
//! sync never finished). A damaged frame with more data after it is not a torn write, and the
//! node refuses to start with a message naming the file and byte. Blocking I/O: the runtime
//! runs it off the executor. The log is not compacted yet.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::quorum::{HardState, LogEntry, Persisted, Round};

pub const METADATA_DIR: &str = "__cluster_metadata-0";
const LOG_FILE: &str = "quorum.log";
const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
/// Largest frame accepted on read: a longer length is damage, not data.
const MAX_FRAME: usize = 64 * 1024 * 1024;

pub struct QuorumStore {
    path: PathBuf,
    file: File,
    /// Per entry on file, in order: its index and the byte where its frame starts.
    entries: Vec<(u64, u64)>,
    len: u64,
    hard_state: HardState,
}

impl QuorumStore {
    /// Opens (or creates) the store under `log_dir` and returns what it holds.
    pub fn open(log_dir: &Path) -> Result<(Self, Persisted), String> {
        let dir = log_dir.join(METADATA_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(LOG_FILE);
        let name = path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {name}: {e}"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        let mut persisted = Persisted::default();
        let mut entries = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            match frame_at(&bytes, at) {
                Ok((payload, next)) => {
                    match decode(payload) {
                        Some(Decoded::Entry(e)) => {
                            // A later entry at an index replaces what the log held from there.
                            let keep = persisted.entries.partition_point(|x| x.index < e.index);
                            persisted.entries.truncate(keep);
                            entries.truncate(keep);
                            entries.push((e.index, at as u64));
                            persisted.entries.push(e);
                        }
                        Some(Decoded::HardState(hs)) => persisted.hard_state = hs,
                        None => {
                            return Err(format!(
                                "{name}: unreadable frame at byte {at}; refusing to start"
                            ))
                        }
                    }
                    at = next;
                }
                Err(claimed_end) if claimed_end >= bytes.len() => {
                    tracing::warn!(
                        "{name}: a torn write at byte {at} ({} bytes) is cut off",
                        bytes.len() - at
                    );
                    break;
                }
                Err(claimed_end) => {
                    return Err(format!(
                        "{name}: damaged frame at byte {at}, with {} more bytes after it; \
                         refusing to start",
                        bytes.len() - claimed_end
                    ));
                }
            }
        }
        let len = at as u64;
        file.set_len(len)
            .and_then(|_| file.sync_data())
            .map_err(|e| format!("cannot truncate {name}: {e}"))?;
        let store = QuorumStore {
            path,
            file,
            entries,
            len,
            hard_state: persisted.hard_state,
        };
        Ok((store, persisted))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a round's entries and hard state, then fdatasyncs.
    pub fn write(&mut self, round: &Round) -> std::io::Result<()> {
        if round.append.is_empty() && round.hard_state.is_none() {
            return Ok(());
        }
        let mut out = Vec::new();
        if let Some(first) = round.append.first() {
            let keep = self.entries.partition_point(|(i, _)| *i < first.index);
            if keep < self.entries.len() {
                // raft replaces a conflicting tail: cut it, and keep the hard state on file.
                self.len = self.entries[keep].1;
                self.entries.truncate(keep);
                self.file.set_len(self.len)?;
                if round.hard_state.is_none() {
                    out.extend(frame(&hard_state_payload(&self.hard_state)));
                }
            }
            for e in &round.append {
                self.entries.push((e.index, self.len + out.len() as u64));
                out.extend(frame(&entry_payload(e)));
            }
        }
        if let Some(hs) = round.hard_state {
            self.hard_state = hs;
            out.extend(frame(&hard_state_payload(&hs)));
        }
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(&out)?;
        self.file.sync_data()?;
        self.len += out.len() as u64;
        Ok(())
    }
}

enum Decoded {
    Entry(LogEntry),
    HardState(HardState),
}

fn entry_payload(e: &LogEntry) -> Vec<u8> {
    let mut p = Vec::with_capacity(17 + e.data.len());
    p.push(ENTRY);
    p.extend_from_slice(&e.index.to_be_bytes());
    p.extend_from_slice(&e.term.to_be_bytes());
    p.extend_from_slice(&e.data);
    p
}

fn hard_state_payload(hs: &HardState) -> Vec<u8> {
    let mut p = Vec::with_capacity(25);
    p.push(HARD_STATE);
    for v in [hs.term, hs.vote, hs.commit] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    p
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The payload of the frame at `at` and where the next one starts, or `Err` with where this one
/// claimed to end when it is incomplete or its checksum fails.
fn frame_at(bytes: &[u8], at: usize) -> Result<(&[u8], usize), usize> {
    let Some(header) = bytes.get(at..at + 8) else {
        return Err(bytes.len());
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_FRAME {
        return Err(bytes.len());
    }
    let end = at + 8 + len;
    match bytes.get(at + 8..end) {
        Some(payload) if crc32c::crc32c(payload) == crc => Ok((payload, end)),
        _ => Err(end),
    }
}

fn decode(p: &[u8]) -> Option<Decoded> {
    let u64_at =
        |i: usize| -> Option<u64> { Some(u64::from_be_bytes(p.get(i..i + 8)?.try_into().ok()?)) };
    match *p.first()? {
        ENTRY => Some(Decoded::Entry(LogEntry {
            index: u64_at(1)?,
            term: u64_at(9)?,
            data: p.get(17..)?.to_vec(),
        })),
        HARD_STATE if p.len() == 25 => Some(Decoded::HardState(HardState {
            term: u64_at(1)?,
            vote: u64_at(9)?,
            commit: u64_at(17)?,
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> LogEntry {
        LogEntry {
            index,
            term,
            data: data.to_vec(),
        }
    }

    fn round(append: Vec<LogEntry>, hs: Option<(u64, u64, u64)>) -> Round {
        Round {
            append,
            hard_state: hs.map(|(term, vote, commit)| HardState { term, vote, commit }),
            ..Round::default()
        }
    }

    #[test]
    fn what_was_written_comes_back_and_replaced_tails_go() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, empty) = QuorumStore::open(dir.path()).unwrap();
        assert_eq!(empty, Persisted::default());
        let mut expected = Persisted::default();
        let rounds = [
            round(vec![entry(1, 1, b""), entry(2, 1, b"a")], Some((1, 1, 0))),
            round(vec![entry(3, 1, b"b")], Some((1, 1, 2))),
            // A new leader's log replaces index 3 on: the old entry goes.
            round(vec![entry(3, 2, b"c"), entry(4, 2, b"d")], None),
            round(vec![], Some((2, 3, 4))),
        ];
        for r in &rounds {
            store.write(r).unwrap();
            expected.write(r);
        }
        drop(store);
        let (_, reopened) = QuorumStore::open(dir.path()).unwrap();
        assert_eq!(reopened, expected);
        assert_eq!(reopened.entries.len(), 4);
        assert_eq!(reopened.entries[2], entry(3, 2, b"c"));
        assert_eq!(
            reopened.hard_state,
            HardState {
                term: 2,
                vote: 3,
                commit: 4
            }
        );
    }

    #[test]
    fn a_single_voter_commits_through_its_disk_and_replays_after_a_restart() {
        use super::super::image::MetadataRecord;
        use super::super::quorum::{Quorum, QuorumSettings};
        let settings = QuorumSettings {
            node_id: 1,
            voters: vec![1],
            election_ticks: 10,
            heartbeat_ticks: 2,
        };
        let batch = |n| {
            vec![MetadataRecord::ProducerIds {
                broker_id: 1,
                next: n,
            }]
        };
        let dir = tempfile::tempdir().unwrap();
        let drain = |q: &mut Quorum, store: &mut QuorumStore| {
            let mut committed = Vec::new();
            while let Some(r) = q.round() {
                store.write(&r).unwrap();
                assert!(
                    r.send_now.is_empty() && r.after_persist.is_empty(),
                    "no peers"
                );
                committed.extend(r.committed.into_iter().map(|c| c.records.unwrap()));
            }
            committed
        };
        let (mut store, p) = QuorumStore::open(dir.path()).unwrap();
        let mut q = Quorum::new(&settings, &p).unwrap();
        for _ in 0..100 {
            q.tick();
            drain(&mut q, &mut store);
            if q.is_leader() {
                break;
            }
        }
        assert!(q.is_leader(), "a lone voter elects itself");
        q.propose(&batch(1)).unwrap();
        q.propose(&batch(2)).unwrap();
        assert_eq!(drain(&mut q, &mut store), vec![batch(1), batch(2)]);
        drop((q, store));
        let (mut store, p) = QuorumStore::open(dir.path()).unwrap();
        let mut q = Quorum::new(&settings, &p).unwrap();
        assert_eq!(
            drain(&mut q, &mut store),
            vec![batch(1), batch(2)],
            "replayed from disk"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_before_the_end_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = QuorumStore::open(dir.path()).unwrap();
        store
            .write(&round(vec![entry(1, 1, b"one")], Some((1, 1, 1))))
            .unwrap();
        store
            .write(&round(vec![entry(2, 1, b"two")], None))
            .unwrap();
        let path = store.path().to_path_buf();
        drop(store);
        let good = std::fs::read(&path).unwrap();
        // Torn: the last frame half written.
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        let (mut store, p) = QuorumStore::open(dir.path()).unwrap();
        assert_eq!(p.entries, vec![entry(1, 1, b"one")]);
        assert_eq!(p.hard_state.commit, 1);
        // The store goes on appending after the cut.
        store
            .write(&round(vec![entry(2, 2, b"new")], None))
            .unwrap();
        drop(store);
        let (_, p) = QuorumStore::open(dir.path()).unwrap();
        assert_eq!(p.entries.last(), Some(&entry(2, 2, b"new")));
        // A flipped byte in the first frame, with frames after it: refused, naming the byte.
        let mut damaged = std::fs::read(&path).unwrap();
        damaged[10] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        let err = QuorumStore::open(dir.path()).err().expect("refused");
        assert!(err.contains("damaged frame at byte 0"), "{err}");
        assert!(err.contains("quorum.log"), "{err}");
    }
}
