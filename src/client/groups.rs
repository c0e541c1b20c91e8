//! `shardlog group list|describe|delete|reset-offsets`: the consumer-group commands, modelled
//! on Kafka's `kafka-consumer-groups.sh`. This file owns their arguments, the requests they send
//! (ListGroups, DescribeGroups, OffsetFetch, ListOffsets, OffsetCommit, DeleteGroups), the
//! decoding of a member's assignment, the tables they print, and the parsing of the
//! `--to-datetime` and `--by-duration` values.
//!
//! A single broker is every group's coordinator as far as the client is concerned (the broker
//! routes a group to the shard that owns it), so no FindCoordinator is sent.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use bytes::{Buf, Bytes};
use clap::{Args, Subcommand};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::cli::{check, list_offset, partitions_of, s, Conn};
use super::Client;

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

#[derive(Subcommand)]
pub enum GroupAction {
    /// Print every consumer group with its state.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a group's state, and per partition its committed offset, log-end offset, lag and
    /// owner.
    Describe {
        #[command(flatten)]
        conn: Conn,
        group: String,
    },
    /// Delete a group that has no members, with its committed offsets.
    Delete {
        #[command(flatten)]
        conn: Conn,
        group: String,
    },
    /// Print (default: dry run) or, with --execute, commit new offsets for a group that has no
    /// active members.
    ResetOffsets {
        #[command(flatten)]
        conn: Conn,
        group: String,
        /// The topic whose offsets are reset.
        #[arg(long)]
        topic: String,
        /// Only these partitions, e.g. --partitions 0,2 (default: all).
        #[arg(long, value_delimiter = ',')]
        partitions: Vec<i32>,
        #[command(flatten)]
        target: ResetTarget,
        /// Commit the new offsets (without it nothing changes).
        #[arg(long)]
        execute: bool,
        /// Only print the new offsets (the default).
        #[arg(long, conflicts_with = "execute")]
        dry_run: bool,
    },
}

/// Where reset-offsets moves each partition: exactly one of these.
#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// The log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// The log end offset.
    #[arg(long)]
    to_latest: bool,
    /// This offset (kept within the log's earliest and latest offsets).
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true)]
    to_offset: Option<i64>,
    /// The committed offset plus N (N may be negative; kept within the log).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// The first offset whose record timestamp is at or after this time, e.g.
    /// 2024-01-31T13:45:00.000 (UTC unless a zone is given: Z, +01:00, -0530).
    #[arg(long, value_name = "YYYY-MM-DDTHH:mm:SS[.sss][ZONE]")]
    to_datetime: Option<String>,
    /// Like --to-datetime, at this long before now: an ISO-8601 duration, e.g. PT10M, P1DT2H.
    #[arg(long, value_name = "PnDTnHnMnS")]
    by_duration: Option<String>,
}

/// A resolved reset target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Shift(i64),
    /// Milliseconds since the epoch.
    Timestamp(i64),
}

impl ResetTarget {
    fn resolve(&self, now_ms: i64) -> anyhow::Result<Target> {
        if self.to_earliest {
            return Ok(Target::Earliest);
        }
        if self.to_latest {
            return Ok(Target::Latest);
        }
        if let Some(n) = self.to_offset {
            return Ok(Target::Offset(n));
        }
        if let Some(n) = self.shift_by {
            return Ok(Target::Shift(n));
        }
        if let Some(text) = &self.to_datetime {
            return Ok(Target::Timestamp(
                parse_datetime(text).context("--to-datetime")?,
            ));
        }
        if let Some(text) = &self.by_duration {
            let back = parse_duration(text).context("--by-duration")?;
            return Ok(Target::Timestamp(now_ms.saturating_sub(back)));
        }
        anyhow::bail!(
            "say where to reset to: one of --to-earliest, --to-latest, --to-offset, --shift-by, \
             --to-datetime, --by-duration"
        )
    }
}

pub fn run(action: GroupAction) -> anyhow::Result<()> {
    match action {
        GroupAction::List { conn } => {
            let mut client = Client::connect(&conn.bootstrap)?;
            list(&mut client)
        }
        GroupAction::Describe { conn, group } => {
            let mut client = Client::connect(&conn.bootstrap)?;
            describe(&mut client, &group)
        }
        GroupAction::Delete { conn, group } => {
            let mut client = Client::connect(&conn.bootstrap)?;
            delete(&mut client, &group)
        }
        GroupAction::ResetOffsets {
            conn,
            group,
            topic,
            partitions,
            target,
            execute,
            dry_run: _,
        } => {
            let target = target.resolve(now_ms()?)?;
            let mut client = Client::connect(&conn.bootstrap)?;
            reset_offsets(&mut client, &group, &topic, partitions, target, execute)
        }
    }
}

fn now_ms() -> anyhow::Result<i64> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| anyhow::anyhow!("the system clock is before 1970"))?;
    Ok(since.as_millis() as i64)
}

/// [`check`], naming the error when the broker sent no message (e.g. `error 68 (NonEmptyGroup)`).
fn check_named(code: i16, what: &str, message: Option<&StrBytes>) -> anyhow::Result<()> {
    if code == 0 {
        return Ok(());
    }
    let named = message
        .cloned()
        .or_else(|| ResponseError::try_from_code(code).map(|e| s(&e.to_string())));
    check(code, what, named.as_ref())
}

fn list(client: &mut Client) -> anyhow::Result<()> {
    let req = ListGroupsRequest::default();
    let resp = client.send(&req, 4)?;
    check_named(resp.error_code, "list groups", None)?;
    let mut rows: Vec<Vec<String>> = resp
        .groups
        .iter()
        .map(|g| vec![cell(g.group_id.0.as_str()), cell(g.group_state.as_str())])
        .collect();
    rows.sort();
    print!("{}", table(&["GROUP", "STATE"], &rows));
    Ok(())
}

fn describe_group(client: &mut Client, group: &str) -> anyhow::Result<DescribedGroup> {
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(s(group))];
    let resp = client.send(&req, 5)?;
    let described = resp
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty DescribeGroups answer for group '{group}'"))?;
    check_named(
        described.error_code,
        &format!("group '{group}'"),
        described.error_message.as_ref(),
    )?;
    Ok(described)
}

/// Every offset the group committed: (topic, partition) -> offset.
fn committed_offsets(
    client: &mut Client,
    group: &str,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(s(group));
    // None asks for every partition the group committed (an empty list would ask for none).
    req.topics = None;
    let resp = client.send(&req, 7)?;
    check_named(resp.error_code, &format!("group '{group}'"), None)?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        let topic = t.name.0.to_string();
        for p in t.partitions {
            check_named(
                p.error_code,
                &format!("group '{group}' on {topic}-{}", p.partition_index),
                None,
            )?;
            if p.committed_offset >= 0 {
                out.insert((topic.clone(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// The partitions in a member's assignment, read as Kafka's ConsumerProtocolAssignment: an
/// i16 version, then the assignment at that version (a newer version is read as the newest
/// known: later versions only append fields). Empty bytes: nothing assigned.
fn decode_assignment(mut bytes: Bytes) -> anyhow::Result<Vec<(String, i32)>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    if bytes.len() < 2 {
        anyhow::bail!("an assignment of {} byte is too short", bytes.len());
    }
    let version = bytes.get_i16();
    if version < 0 {
        anyhow::bail!("assignment version {version} is negative");
    }
    if !lengths_fit(&bytes) {
        anyhow::bail!("an assignment's topic or partition count runs past its end");
    }
    let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version.min(3))?;
    let mut out = Vec::new();
    for t in assignment.assigned_partitions {
        let topic = t.topic.0.to_string();
        for p in t.partitions {
            out.push((topic.clone(), p));
        }
    }
    Ok(out)
}

/// Whether every topic's name and partition array (after the version) lies within `b`, so
/// that decoding never reserves room for a damaged count.
fn lengths_fit(b: &[u8]) -> bool {
    fn i16_at(b: &[u8], at: usize) -> Option<i16> {
        Some(i16::from_be_bytes(
            b.get(at..at.checked_add(2)?)?.try_into().ok()?,
        ))
    }
    fn i32_at(b: &[u8], at: usize) -> Option<i32> {
        Some(i32::from_be_bytes(
            b.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    }
    fn walk(b: &[u8]) -> Option<()> {
        let topics = i32_at(b, 0)?;
        let mut at = 4usize;
        // Each topic takes at least 6 bytes, so a huge count fails within a few steps.
        for _ in 0..topics.max(0) {
            let name = usize::try_from(i16_at(b, at)?).ok()?;
            at = at.checked_add(2 + name)?;
            let partitions = usize::try_from(i32_at(b, at)?).ok()?;
            at = at.checked_add(4)?.checked_add(partitions.checked_mul(4)?)?;
            if at > b.len() {
                return None;
            }
        }
        Some(())
    }
    walk(b).is_some()
}

fn describe(client: &mut Client, group: &str) -> anyhow::Result<()> {
    let described = describe_group(client, group)?;
    let state = described.group_state.to_string();
    let committed = committed_offsets(client, group)?;
    if state == "Dead" && committed.is_empty() {
        anyhow::bail!("consumer group '{group}' does not exist");
    }
    // Who owns each partition (index into the members), and members that own none.
    let mut owners: BTreeMap<(String, i32), usize> = BTreeMap::new();
    let mut idle: Vec<usize> = Vec::new();
    let protocol_type = described.protocol_type.as_str();
    for (i, m) in described.members.iter().enumerate() {
        let parts = if protocol_type == "consumer" || protocol_type.is_empty() {
            match decode_assignment(m.member_assignment.clone()) {
                Ok(parts) => parts,
                Err(e) => {
                    eprintln!(
                        "warning: cannot read the assignment of member {}: {e:#}",
                        m.member_id.as_str()
                    );
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        if parts.is_empty() {
            idle.push(i);
        }
        for p in parts {
            owners.insert(p, i);
        }
    }
    let mut keys: BTreeSet<(String, i32)> = committed.keys().cloned().collect();
    keys.extend(owners.keys().cloned());

    let member_cells = |i: usize| -> [String; 3] {
        let m = &described.members[i];
        [
            cell(m.member_id.as_str()),
            cell(m.client_host.as_str()),
            cell(m.client_id.as_str()),
        ]
    };
    let mut rows = Vec::new();
    for key in &keys {
        let (topic, partition) = (&key.0, key.1);
        let current = committed.get(key).copied();
        // A topic deleted since the commit has no end offset.
        let end = list_offset(client, topic, partition, LATEST, 0).ok();
        let lag = match (current, end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            _ => None,
        };
        let [consumer, host, client_id] = match owners.get(key) {
            Some(&i) => member_cells(i),
            None => ["-".to_string(), "-".to_string(), "-".to_string()],
        };
        rows.push(vec![
            cell(group),
            cell(topic),
            partition.to_string(),
            opt(current),
            opt(end),
            opt(lag),
            consumer,
            host,
            client_id,
        ]);
    }
    for &i in &idle {
        let [consumer, host, client_id] = member_cells(i);
        rows.push(vec![
            cell(group),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            consumer,
            host,
            client_id,
        ]);
    }
    let n = described.members.len();
    println!(
        "Consumer group '{group}' is {state} with {n} member{}",
        if n == 1 { "" } else { "s" }
    );
    println!();
    print!(
        "{}",
        table(
            &[
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID",
            ],
            &rows,
        )
    );
    Ok(())
}

fn delete(client: &mut Client, group: &str) -> anyhow::Result<()> {
    let mut req = DeleteGroupsRequest::default();
    req.groups_names = vec![GroupId(s(group))];
    let resp = client.send(&req, 2)?;
    if resp.results.is_empty() {
        anyhow::bail!("empty DeleteGroups answer for group '{group}'");
    }
    for r in &resp.results {
        check_named(
            r.error_code,
            &format!("delete group '{}'", r.group_id.0.as_str()),
            None,
        )?;
    }
    println!("Deletion of requested consumer groups ('{group}') was successful.");
    Ok(())
}

/// `wanted` kept within the log: Kafka resets to the earliest or latest offset rather than
/// outside the log.
fn clamp_offset(wanted: i64, earliest: i64, latest: i64) -> i64 {
    if wanted < earliest {
        earliest
    } else if wanted > latest {
        latest
    } else {
        wanted
    }
}

fn reset_offsets(
    client: &mut Client,
    group: &str,
    topic: &str,
    mut partitions: Vec<i32>,
    target: Target,
    execute: bool,
) -> anyhow::Result<()> {
    if execute {
        let state = describe_group(client, group)?.group_state.to_string();
        if state != "Empty" && state != "Dead" {
            anyhow::bail!(
                "Assignments can only be reset if the group '{group}' is inactive, but the \
                 current state is {state}."
            );
        }
    }
    let all = partitions_of(client, topic)?;
    if partitions.is_empty() {
        partitions = all;
    } else {
        for p in &partitions {
            if !all.contains(p) {
                anyhow::bail!(
                    "topic {topic} has no partition {p} (it has {} partitions)",
                    all.len()
                );
            }
        }
    }
    partitions.sort_unstable();
    partitions.dedup();
    let committed = match target {
        Target::Shift(_) => committed_offsets(client, group)?,
        _ => BTreeMap::new(),
    };

    let mut plan: Vec<(i32, i64)> = Vec::new();
    for p in partitions {
        let earliest = list_offset(client, topic, p, EARLIEST, 0)?;
        let latest = list_offset(client, topic, p, LATEST, 0)?;
        let wanted = match target {
            Target::Earliest => earliest,
            Target::Latest => latest,
            Target::Offset(n) => n,
            Target::Shift(n) => {
                let current = committed.get(&(topic.to_string(), p)).ok_or_else(|| {
                    anyhow::anyhow!(
                        "Cannot shift offset for partition {topic}-{p} since there is no \
                         current committed offset"
                    )
                })?;
                current.saturating_add(n)
            }
            Target::Timestamp(ts) => {
                // Negative timestamps are ListOffsets' special values: a time before 1970
                // means the first record.
                let found = list_offset(client, topic, p, ts.max(0), 0)?;
                if found < 0 {
                    // No record that late: the end of the log, as Kafka does.
                    latest
                } else {
                    found
                }
            }
        };
        let new = clamp_offset(wanted, earliest, latest);
        if new != wanted {
            let side = if wanted < earliest {
                "lower than the earliest"
            } else {
                "higher than the latest"
            };
            eprintln!(
                "New offset ({wanted}) is {side} offset for partition {topic}-{p}; \
                 it will be set to {new}."
            );
        }
        plan.push((p, new));
    }

    if execute {
        commit(client, group, topic, &plan)?;
    }
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|&(p, offset)| vec![cell(group), cell(topic), p.to_string(), offset.to_string()])
        .collect();
    print!(
        "{}",
        table(&["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], &rows)
    );
    if !execute {
        eprintln!("Dry run: nothing was committed; add --execute to commit these offsets.");
    }
    Ok(())
}

/// Commits `plan` as an admin (simple) commit: no member id, generation -1, which the
/// coordinator accepts only while the group has no members.
fn commit(
    client: &mut Client,
    group: &str,
    topic: &str,
    plan: &[(i32, i64)],
) -> anyhow::Result<()> {
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = plan
        .iter()
        .map(|&(p, offset)| {
            let mut cp = OffsetCommitRequestPartition::default();
            cp.partition_index = p;
            cp.committed_offset = offset;
            cp.committed_leader_epoch = -1;
            cp.committed_metadata = Some(s(""));
            cp
        })
        .collect();
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id_or_member_epoch = -1;
    req.member_id = s("");
    req.group_instance_id = None;
    req.topics = vec![t];
    let resp = client.send(&req, 8)?;
    for t in resp.topics {
        let name = t.name.0.to_string();
        for p in t.partitions {
            check_named(
                p.error_code,
                &format!("commit for group '{group}' on {name}-{}", p.partition_index),
                None,
            )?;
        }
    }
    Ok(())
}

/// A table cell: never empty, so that columns stay whitespace-separated.
fn cell(v: &str) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.to_string()
    }
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

/// Left-aligned columns two spaces apart, a header line first.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<width$}", width = *w))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `n` ASCII digits, exactly.
fn fixed_digits(text: &str, n: usize) -> Option<i64> {
    if text.len() == n && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

/// Milliseconds in a fraction of a second written after the point (1 to 9 digits; digits
/// beyond milliseconds are dropped).
fn fraction_ms(digits: &str) -> Option<i64> {
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut ms = 0;
    for i in 0..3 {
        ms = ms * 10 + digits.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    Some(ms)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A zone offset in minutes east of UTC: `+HH:MM`, `+HHMM` or `+HH` (or with `-`).
fn zone_minutes(zone: &str) -> Option<i64> {
    let (sign, rest) = match *zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let (hours, minutes) = match rest.len() {
        2 => (fixed_digits(rest, 2)?, 0),
        4 => (fixed_digits(&rest[..2], 2)?, fixed_digits(&rest[2..], 2)?),
        5 if rest.as_bytes()[2] == b':' => {
            (fixed_digits(&rest[..2], 2)?, fixed_digits(&rest[3..], 2)?)
        }
        _ => return None,
    };
    if hours > 18 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 60 + minutes))
}

/// `a<sep>b<sep>c` split into its three parts; None for any other count.
fn three_parts(text: &str, sep: char) -> Option<(&str, &str, &str)> {
    let mut parts = text.split(sep);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c), None) => Some((a, b, c)),
        _ => None,
    }
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:mm:SS[.sss]` followed by an optional zone
/// (`Z`, `±HH:MM`, `±HHMM`, `±HH`); without a zone the time is UTC (as Kafka's tool reads it).
fn parse_datetime(text: &str) -> anyhow::Result<i64> {
    let bad = || {
        anyhow::anyhow!(
            "'{text}' is not a date and time like 2024-01-31T13:45:00, 2024-01-31T13:45:00.250Z \
             or 2024-01-31T13:45:00+01:00"
        )
    };
    if !text.is_ascii() {
        return Err(bad());
    }
    let (date, rest) = text.split_once('T').ok_or_else(bad)?;
    let (y, mo, d) = three_parts(date, '-').ok_or_else(bad)?;
    let year = fixed_digits(y, 4).ok_or_else(bad)?;
    let month = fixed_digits(mo, 2).ok_or_else(bad)?;
    let day = fixed_digits(d, 2).ok_or_else(bad)?;

    let (time, zone) = if let Some(t) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z')) {
        (t, 0)
    } else if let Some(at) = rest.find(['+', '-']) {
        (&rest[..at], zone_minutes(&rest[at..]).ok_or_else(bad)?)
    } else {
        (rest, 0)
    };
    let (hms, millis) = match time.split_once('.') {
        Some((hms, frac)) => (hms, fraction_ms(frac).ok_or_else(bad)?),
        None => (time, 0),
    };
    let (h, mi, sec) = three_parts(hms, ':').ok_or_else(bad)?;
    let hour = fixed_digits(h, 2).ok_or_else(bad)?;
    let minute = fixed_digits(mi, 2).ok_or_else(bad)?;
    let second = fixed_digits(sec, 2).ok_or_else(bad)?;

    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        anyhow::bail!("'{text}': there is no day {year:04}-{month:02}-{day:02}");
    }
    if hour > 23 || minute > 59 || second > 59 {
        anyhow::bail!("'{text}': there is no time {hour:02}:{minute:02}:{second:02}");
    }
    let seconds =
        ((days_from_civil(year, month, day) * 24 + hour) * 60 + minute) * 60 + second - zone * 60;
    Ok(seconds * 1000 + millis)
}

/// A run of ASCII digits as a number.
fn whole_number(digits: &str) -> Option<i64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Milliseconds in an ISO-8601 duration as Java's `Duration.parse` (which Kafka's tool uses)
/// reads it: `PnDTnHnMn.nS`, every part optional but at least one, with an optional leading
/// sign, in either case; e.g. PT10M, P1DT2H, P7D, PT1.5S.
fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("'{text}' is not a duration like PT10M, P1DT2H or P7D");
    let upper = text.to_ascii_uppercase();
    let (negative, unsigned) = match upper.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, upper.strip_prefix('+').unwrap_or(&upper)),
    };
    let body = unsigned.strip_prefix('P').ok_or_else(bad)?;
    let (days, time) = match body.split_once('T') {
        Some((_, "")) => return Err(bad()),
        Some((days, time)) => (days, time),
        None => (body, ""),
    };
    let too_long = || anyhow::anyhow!("'{text}' is too long a duration");
    let mut total: i64 = 0;
    let mut parts = 0;
    if !days.is_empty() {
        let n = days
            .strip_suffix('D')
            .and_then(whole_number)
            .ok_or_else(bad)?;
        total = n.checked_mul(86_400_000).ok_or_else(too_long)?;
        parts += 1;
    }
    let mut rest = time;
    let mut last_rank = 0;
    while !rest.is_empty() {
        let at = rest
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(bad)?;
        let number = &rest[..at];
        let unit = rest.as_bytes()[at];
        let (rank, ms) = match unit {
            b'H' => (
                1,
                whole_number(number).and_then(|n| n.checked_mul(3_600_000)),
            ),
            b'M' => (2, whole_number(number).and_then(|n| n.checked_mul(60_000))),
            b'S' => {
                let ms = match number.split_once('.') {
                    Some((whole, frac)) => whole_number(whole)
                        .zip(fraction_ms(frac))
                        .and_then(|(w, f)| w.checked_mul(1000)?.checked_add(f)),
                    None => whole_number(number).and_then(|n| n.checked_mul(1000)),
                };
                (3, ms)
            }
            _ => return Err(bad()),
        };
        if rank <= last_rank {
            return Err(bad());
        }
        last_rank = rank;
        let ms = ms.ok_or_else(bad)?;
        total = total.checked_add(ms).ok_or_else(too_long)?;
        parts += 1;
        rest = &rest[at + 1..];
    }
    if parts == 0 {
        return Err(bad());
    }
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    const T_2024: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z

    #[test]
    fn datetimes_in_utc_and_with_zones() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00").unwrap(), 0);
        assert_eq!(parse_datetime("2024-01-01T00:00:00").unwrap(), T_2024);
        assert_eq!(parse_datetime("2024-01-01T00:00:00Z").unwrap(), T_2024);
        assert_eq!(
            parse_datetime("2024-01-01T00:01:00.000Z").unwrap(),
            T_2024 + 60_000
        );
        assert_eq!(
            parse_datetime("2024-01-01T00:00:00.5").unwrap(),
            T_2024 + 500
        );
        assert_eq!(
            parse_datetime("2024-01-01T00:00:00.123456").unwrap(),
            T_2024 + 123
        );
        assert_eq!(parse_datetime("2024-01-01T01:00:00+01:00").unwrap(), T_2024);
        assert_eq!(parse_datetime("2023-12-31T19:30:00-0430").unwrap(), T_2024);
        assert_eq!(
            parse_datetime("2024-01-01T02:00:00.250+02").unwrap(),
            T_2024 + 250
        );
        // Leap day, end of a century, a date before 1970.
        assert_eq!(
            parse_datetime("2024-02-29T00:00:00Z").unwrap(),
            T_2024 + 59 * 86_400_000
        );
        assert_eq!(
            parse_datetime("2000-03-01T00:00:00Z").unwrap(),
            951_868_800_000
        );
        assert_eq!(parse_datetime("1969-12-31T23:59:59Z").unwrap(), -1000);
    }

    #[test]
    fn malformed_datetimes_are_refused() {
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01 00:00:00",
            "2024-1-01T00:00:00",
            "2024-01-01T00:00",
            "2024-01-01T00:00:00.",
            "2024-01-01T00:00:00.1234567890",
            "2024-01-01T24:00:00",
            "2024-01-01T00:60:00",
            "2023-02-29T00:00:00",
            "2024-13-01T00:00:00",
            "2024-01-00T00:00:00",
            "2024-01-01T00:00:00+25:00",
            "2024-01-01T00:00:00+1",
            "2024-01-01T00:00:00Zx",
            "2024-01-01T00:00:00é",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations_as_java_reads_them() {
        assert_eq!(parse_duration("PT10M").unwrap(), 600_000);
        assert_eq!(parse_duration("P1DT2H").unwrap(), 93_600_000);
        assert_eq!(parse_duration("P7D").unwrap(), 604_800_000);
        assert_eq!(parse_duration("PT1H2M3S").unwrap(), 3_723_000);
        assert_eq!(parse_duration("PT1.5S").unwrap(), 1500);
        assert_eq!(parse_duration("pt30s").unwrap(), 30_000);
        assert_eq!(parse_duration("-PT1M").unwrap(), -60_000);
        assert_eq!(parse_duration("P0D").unwrap(), 0);
        for bad in [
            "",
            "P",
            "PT",
            "10M",
            "P1H",
            "PT1D",
            "PT1M1H",
            "PT1H1H",
            "P1Y",
            "PT1.S",
            "PTM",
            "P1DT",
            "PT-1M",
            "P99999999999999D",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn offsets_stay_within_the_log() {
        assert_eq!(clamp_offset(-5, 10, 100), 10);
        assert_eq!(clamp_offset(50, 10, 100), 50);
        assert_eq!(clamp_offset(1000, 10, 100), 100);
    }

    #[test]
    fn assignments_decode_from_the_consumer_protocol() {
        let mut tp = TopicPartition::default();
        tp.topic = TopicName(s("orders"));
        tp.partitions = vec![0, 2];
        let mut a = ConsumerProtocolAssignment::default();
        a.assigned_partitions = vec![tp];
        for version in [0i16, 1, 3] {
            let mut buf = bytes::BytesMut::new();
            buf.extend_from_slice(&version.to_be_bytes());
            a.encode(&mut buf, version).unwrap();
            assert_eq!(
                decode_assignment(buf.freeze()).unwrap(),
                vec![("orders".to_string(), 0), ("orders".to_string(), 2)]
            );
        }
        assert!(decode_assignment(Bytes::new()).unwrap().is_empty());
        assert!(decode_assignment(Bytes::from_static(&[0])).is_err());
        assert!(decode_assignment(Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_err());
        // Damaged counts are refused before anything is reserved for them.
        assert!(decode_assignment(Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff])).is_err());
        assert!(decode_assignment(Bytes::from_static(&[
            0, 0, 0, 0, 0, 1, 0, 1, b'a', 0x7f, 0xff, 0xff, 0xff
        ]))
        .is_err());
    }

    #[test]
    fn tables_align_their_columns() {
        let out = table(
            &["GROUP", "STATE"],
            &[
                vec!["a-long-group".into(), "Empty".into()],
                vec!["g".into(), "-".into()],
            ],
        );
        assert_eq!(
            out,
            "GROUP         STATE\na-long-group  Empty\ng             -\n"
        );
    }

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        action: GroupAction,
    }

    fn parse(args: &[&str]) -> Result<GroupAction, clap::Error> {
        Cli::try_parse_from(std::iter::once("group").chain(args.iter().copied())).map(|c| c.action)
    }

    #[test]
    fn reset_offsets_takes_exactly_one_target() {
        let ok = parse(&[
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--shift-by",
            "-10",
            "--execute",
        ])
        .unwrap();
        let GroupAction::ResetOffsets {
            target, execute, ..
        } = ok
        else {
            panic!("not reset-offsets");
        };
        assert!(execute);
        assert_eq!(target.resolve(0).unwrap(), Target::Shift(-10));
        let ok = parse(&[
            "reset-offsets",
            "--bootstrap",
            "h:1",
            "g",
            "--topic",
            "t",
            "--partitions",
            "0,2",
            "--by-duration",
            "PT1M",
        ])
        .unwrap();
        let GroupAction::ResetOffsets {
            target, partitions, ..
        } = ok
        else {
            panic!("not reset-offsets");
        };
        assert_eq!(partitions, vec![0, 2]);
        assert_eq!(
            target.resolve(T_2024).unwrap(),
            Target::Timestamp(T_2024 - 60_000)
        );

        assert!(
            parse(&["reset-offsets", "g", "--topic", "t"]).is_err(),
            "no target"
        );
        assert!(
            parse(&[
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-earliest",
                "--to-latest"
            ])
            .is_err(),
            "two targets"
        );
        assert!(
            parse(&["reset-offsets", "g", "--to-earliest"]).is_err(),
            "no topic"
        );
        assert!(
            parse(&[
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-earliest",
                "--execute",
                "--dry-run"
            ])
            .is_err(),
            "--execute with --dry-run"
        );
        let bad_time = parse(&[
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-datetime",
            "yesterday",
        ])
        .unwrap();
        let GroupAction::ResetOffsets { target, .. } = bad_time else {
            panic!("not reset-offsets");
        };
        let err = format!("{:#}", target.resolve(0).unwrap_err());
        assert!(err.starts_with("--to-datetime: 'yesterday'"), "{err}");
    }
}
