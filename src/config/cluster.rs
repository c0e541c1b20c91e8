//! The cluster settings, under KRaft's key names: which roles this process plays
//! (`process.roles`), the controller quorum (`controller.quorum.voters`,
//! `controller.listener.names`), the listeners by name (`listeners`,
//! `listener.security.protocol.map`, `inter.broker.listener.name`), and the replication
//! defaults (`default.replication.factor`, `min.insync.replicas`, `replica.lag.time.max.ms`,
//! `unclean.leader.election.enable`, the internal topics' factors, leader rebalancing, broker
//! sessions).
//!
//! With nothing set, a process is a broker and its own controller, the only voter: one node
//! that needs no controller listener. Invariant: a [`ClusterConfig`] that exists is
//! consistent — this node is a voter if it is a controller, a broker-only node knows at least
//! one voter, every named listener exists, and the quorum's voters are listed once each.

use std::collections::BTreeMap;

/// Keys and their embedded defaults (Kafka's, except where a single node needs its own).
pub const CLUSTER_DEFAULTS: &[(&str, &str)] = &[
    ("process.roles", "broker,controller"),
    ("controller.quorum.voters", ""),
    ("controller.listener.names", "CONTROLLER"),
    (
        "listener.security.protocol.map",
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
    ),
    ("inter.broker.listener.name", ""),
    ("broker.rack", ""),
    ("replica.lag.time.max.ms", "30000"),
    ("unclean.leader.election.enable", "false"),
    ("auto.leader.rebalance.enable", "true"),
    ("leader.imbalance.check.interval.seconds", "300"),
    ("broker.session.timeout.ms", "9000"),
    ("broker.heartbeat.interval.ms", "2000"),
    ("controller.quorum.election.timeout.ms", "1000"),
    ("controller.quorum.fetch.timeout.ms", "2000"),
    ("replica.fetch.wait.max.ms", "500"),
    ("replica.fetch.min.bytes", "1"),
    ("replica.fetch.max.bytes", "1048576"),
    ("replica.fetch.response.max.bytes", "10485760"),
    ("replica.high.watermark.checkpoint.interval.ms", "5000"),
    ("controlled.shutdown.enable", "true"),
];

/// One `listeners` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// One `controller.quorum.voters` entry: `id@host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub broker: bool,
    pub controller: bool,
    pub node_id: i32,
    /// The quorum's voters. Empty means this node alone, in-process.
    pub voters: Vec<Voter>,
    pub controller_listener_names: Vec<String>,
    /// Every listener, controller ones included, in the order given.
    pub listeners: Vec<Listener>,
    pub inter_broker_listener_name: String,
    pub rack: Option<String>,
    pub default_replication_factor: i16,
    pub min_insync_replicas: i32,
    pub replica_lag_time_max_ms: i64,
    pub unclean_leader_election: bool,
    pub offsets_topic_replication_factor: i16,
    pub transaction_state_log_replication_factor: i16,
    pub transaction_state_log_min_isr: i32,
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_interval_ms: i64,
    pub broker_session_timeout_ms: i64,
    pub broker_heartbeat_interval_ms: i64,
    pub controller_election_timeout_ms: i64,
    pub controller_fetch_timeout_ms: i64,
    pub replica_fetch_wait_max_ms: i64,
    pub replica_fetch_min_bytes: i32,
    pub replica_fetch_max_bytes: i32,
    pub replica_fetch_response_max_bytes: i32,
    pub hw_checkpoint_interval_ms: i64,
    pub controlled_shutdown: bool,
}

impl ClusterConfig {
    /// The listener clients use: the first one that is not a controller listener.
    pub fn client_listener(&self) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| !self.controller_listener_names.contains(&l.name))
    }

    /// This node's controller listener, if it has one.
    pub fn controller_listener(&self) -> Option<&Listener> {
        let first = self.controller_listener_names.first()?;
        self.listeners.iter().find(|l| &l.name == first)
    }

    /// Whether this node is the only voter (no quorum traffic at all).
    pub fn single_voter(&self) -> bool {
        self.voters.is_empty() || (self.voters.len() == 1 && self.voters[0].id == self.node_id)
    }

    /// Reads the cluster keys; `get` gives each key's value (its default when not set). The
    /// error names the key and what is wrong with it.
    pub fn parse(node_id: i32, get: &dyn Fn(&str) -> String) -> Result<Self, String> {
        let int = |k: &str| -> Result<i64, String> {
            let v = get(k);
            v.trim()
                .parse::<i64>()
                .map_err(|_| format!("{k}: '{v}' is not an integer"))
        };
        let positive = |k: &str| -> Result<i64, String> {
            let n = int(k)?;
            if n <= 0 {
                return Err(format!("{k}: must be positive, got {n}"));
            }
            Ok(n)
        };
        let short = |k: &str| -> Result<i16, String> {
            let n = positive(k)?;
            i16::try_from(n).map_err(|_| format!("{k}: {n} is out of range"))
        };
        let small = |k: &str| -> Result<i32, String> {
            let n = positive(k)?;
            i32::try_from(n).map_err(|_| format!("{k}: {n} is out of range"))
        };
        let boolean = |k: &str| -> Result<bool, String> {
            match get(k).trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                v => Err(format!("{k}: '{v}' is not true or false")),
            }
        };
        let list = |k: &str| -> Vec<String> {
            get(k)
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };

        let roles = list("process.roles");
        let mut broker = false;
        let mut controller = false;
        for r in &roles {
            match r.as_str() {
                "broker" => broker = true,
                "controller" => controller = true,
                other => {
                    return Err(format!(
                        "process.roles: unknown role '{other}' (broker, controller)"
                    ))
                }
            }
        }
        if !broker && !controller {
            return Err("process.roles: must name broker, controller or both".into());
        }
        let protocols = parse_protocol_map(&get("listener.security.protocol.map"))?;
        let listeners = parse_listeners(&get("listeners"), "listeners", &protocols)?;
        let controller_listener_names = list("controller.listener.names");
        let voters = parse_voters(&get("controller.quorum.voters"))?;
        let inter = get("inter.broker.listener.name");
        let inter_broker_listener_name = if inter.trim().is_empty() {
            "PLAINTEXT".to_string()
        } else {
            inter.trim().to_string()
        };
        let rack = Some(get("broker.rack").trim().to_string()).filter(|r| !r.is_empty());
        let config = ClusterConfig {
            broker,
            controller,
            node_id,
            voters,
            controller_listener_names,
            listeners,
            inter_broker_listener_name,
            rack,
            default_replication_factor: short("default.replication.factor")?,
            min_insync_replicas: small("min.insync.replicas")?,
            replica_lag_time_max_ms: positive("replica.lag.time.max.ms")?,
            unclean_leader_election: boolean("unclean.leader.election.enable")?,
            offsets_topic_replication_factor: short("offsets.topic.replication.factor")?,
            transaction_state_log_replication_factor: short(
                "transaction.state.log.replication.factor",
            )?,
            transaction_state_log_min_isr: small("transaction.state.log.min.isr")?,
            auto_leader_rebalance: boolean("auto.leader.rebalance.enable")?,
            leader_imbalance_check_interval_ms: positive(
                "leader.imbalance.check.interval.seconds",
            )?
            .saturating_mul(1000),
            broker_session_timeout_ms: positive("broker.session.timeout.ms")?,
            broker_heartbeat_interval_ms: positive("broker.heartbeat.interval.ms")?,
            controller_election_timeout_ms: positive("controller.quorum.election.timeout.ms")?,
            controller_fetch_timeout_ms: positive("controller.quorum.fetch.timeout.ms")?,
            replica_fetch_wait_max_ms: positive("replica.fetch.wait.max.ms")?,
            replica_fetch_min_bytes: small("replica.fetch.min.bytes")?,
            replica_fetch_max_bytes: small("replica.fetch.max.bytes")?,
            replica_fetch_response_max_bytes: small("replica.fetch.response.max.bytes")?,
            hw_checkpoint_interval_ms: positive("replica.high.watermark.checkpoint.interval.ms")?,
            controlled_shutdown: boolean("controlled.shutdown.enable")?,
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let id = self.node_id;
        if self.broker && self.client_listener().is_none() {
            return Err(
                "listeners: a broker needs a listener that is not in controller.listener.names"
                    .into(),
            );
        }
        if self.controller && !self.broker {
            if let Some(l) = self.client_listener() {
                return Err(format!(
                    "listeners: with process.roles=controller every listener must be a controller \
                     listener (controller.listener.names), not '{}'",
                    l.name
                ));
            }
        }
        if !self.controller && self.voters.is_empty() {
            return Err(
                "controller.quorum.voters: a node that is not a controller must name at least \
                 one voter (id@host:port)"
                    .into(),
            );
        }
        if self.controller && !self.voters.is_empty() {
            if !self.voters.iter().any(|v| v.id == id) {
                return Err(format!(
                    "controller.quorum.voters: node.id {id} is a controller but not one of the \
                     voters"
                ));
            }
            if !self.single_voter() && self.controller_listener().is_none() {
                return Err(format!(
                    "controller.listener.names: no listener named '{}' in listeners, and this \
                     controller has other voters to talk to",
                    self.controller_listener_names
                        .first()
                        .map_or("", String::as_str)
                ));
            }
        }
        if self.broker
            && !self
                .listeners
                .iter()
                .any(|l| l.name == self.inter_broker_listener_name)
        {
            return Err(format!(
                "inter.broker.listener.name: no listener named '{}' in listeners",
                self.inter_broker_listener_name
            ));
        }
        if self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms {
            return Err(format!(
                "broker.heartbeat.interval.ms ({}) must be below broker.session.timeout.ms ({})",
                self.broker_heartbeat_interval_ms, self.broker_session_timeout_ms
            ));
        }
        if self.transaction_state_log_min_isr
            > i32::from(self.transaction_state_log_replication_factor)
        {
            return Err(format!(
                "transaction.state.log.min.isr ({}) is above \
                 transaction.state.log.replication.factor ({})",
                self.transaction_state_log_min_isr, self.transaction_state_log_replication_factor
            ));
        }
        Ok(())
    }
}

/// `NAME:PROTOCOL,...`; only PLAINTEXT is served.
fn parse_protocol_map(value: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, protocol) = entry.split_once(':').ok_or_else(|| {
            format!("listener.security.protocol.map: '{entry}' is not NAME:PROTOCOL")
        })?;
        map.insert(
            name.trim().to_ascii_uppercase(),
            protocol.trim().to_ascii_uppercase(),
        );
    }
    Ok(map)
}

/// `NAME://host:port,...` (Kafka's `listeners` and `advertised.listeners`). Every name must
/// map to PLAINTEXT, the only protocol served, and appear once.
pub fn parse_listeners(
    value: &str,
    key: &str,
    protocols: &BTreeMap<String, String>,
) -> Result<Vec<Listener>, String> {
    let mut out: Vec<Listener> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, address) = entry
            .split_once("://")
            .ok_or_else(|| format!("{key}: '{entry}' is not of the form NAME://host:port"))?;
        let name = name.trim().to_ascii_uppercase();
        match protocols.get(&name).map(String::as_str) {
            Some("PLAINTEXT") => {}
            Some(other) => {
                return Err(format!(
                    "{key}: listener {name} uses {other}; only PLAINTEXT is supported"
                ))
            }
            None => {
                return Err(format!(
                    "{key}: listener {name} is not in listener.security.protocol.map"
                ))
            }
        }
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("{key}: '{entry}' has no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{key}: port '{port}' is not a number 0-65535"))?;
        let host = if host.is_empty() {
            "0.0.0.0".to_string()
        } else {
            host.trim_matches(['[', ']']).to_string()
        };
        if out.iter().any(|l| l.name == name) {
            return Err(format!("{key}: listener {name} is given twice"));
        }
        out.push(Listener { name, host, port });
    }
    Ok(out)
}

/// `id@host:port,...`.
fn parse_voters(value: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || format!("controller.quorum.voters: '{entry}' is not of the form id@host:port");
        let (id, address) = entry.split_once('@').ok_or_else(bad)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let id: i32 = id.trim().parse().map_err(|_| bad())?;
        let port: u16 = port.trim().parse().map_err(|_| bad())?;
        if id < 0 || host.is_empty() || port == 0 {
            return Err(bad());
        }
        if voters.iter().any(|v| v.id == id) {
            return Err(format!(
                "controller.quorum.voters: voter {id} is listed twice"
            ));
        }
        voters.push(Voter {
            id,
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        });
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(node_id: i32, set: &[(&str, &str)]) -> Result<ClusterConfig, String> {
        let mut values: BTreeMap<&str, &str> = CLUSTER_DEFAULTS.iter().copied().collect();
        values.insert("listeners", "PLAINTEXT://127.0.0.1:9092");
        values.insert("default.replication.factor", "1");
        values.insert("min.insync.replicas", "1");
        values.insert("offsets.topic.replication.factor", "1");
        values.insert("transaction.state.log.replication.factor", "1");
        values.insert("transaction.state.log.min.isr", "1");
        for (k, v) in set {
            values.insert(k, v);
        }
        ClusterConfig::parse(node_id, &|k| {
            values.get(k).copied().unwrap_or("").to_string()
        })
    }

    #[test]
    fn nothing_set_is_one_node_playing_both_roles() {
        let c = parse(0, &[]).unwrap();
        assert!(c.broker && c.controller && c.single_voter());
        assert_eq!(c.client_listener().map(|l| l.port), Some(9092));
        assert_eq!(c.controller_listener(), None);
        assert_eq!(c.replica_lag_time_max_ms, 30_000);
        assert!(!c.unclean_leader_election);
    }

    #[test]
    fn a_three_voter_quorum_with_its_listeners() {
        let c = parse(
            2,
            &[
                (
                    "controller.quorum.voters",
                    "1@127.0.0.1:9093,2@127.0.0.2:9093,3@127.0.0.3:9093",
                ),
                (
                    "listeners",
                    "PLAINTEXT://127.0.0.2:9092,CONTROLLER://127.0.0.2:9093",
                ),
                ("broker.rack", "r2"),
                ("min.insync.replicas", "2"),
            ],
        )
        .unwrap();
        assert_eq!(c.voters.len(), 3);
        assert_eq!(c.voters[1].host, "127.0.0.2");
        assert_eq!(c.controller_listener().map(|l| l.port), Some(9093));
        assert_eq!(
            c.client_listener().map(|l| l.name.as_str()),
            Some("PLAINTEXT")
        );
        assert_eq!(c.rack.as_deref(), Some("r2"));
        assert!(!c.single_voter());
    }

    #[test]
    fn inconsistent_settings_are_named() {
        let voters = ("controller.quorum.voters", "1@a:9093,2@b:9093");
        let both = ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093");
        let err = |id, set: &[(&str, &str)]| parse(id, set).unwrap_err();
        assert!(err(3, &[voters, both]).contains("not one of the voters"));
        assert!(err(1, &[voters]).contains("no listener named 'CONTROLLER'"));
        assert!(err(4, &[("process.roles", "broker")]).contains("at least one voter"));
        assert!(err(1, &[("process.roles", "controller"), voters, both]).contains("every listener"));
        assert!(err(1, &[("process.roles", "router")]).contains("unknown role"));
        assert!(err(1, &[("controller.quorum.voters", "1@a")]).contains("id@host:port"));
        assert!(err(1, &[("controller.quorum.voters", "1@a:1,1@b:2")]).contains("twice"));
        assert!(err(1, &[("listeners", "SSL://:9092")]).contains("only PLAINTEXT"));
        assert!(err(1, &[("listeners", "EXTERNAL://:9092")]).contains("protocol.map"));
        assert!(err(1, &[("inter.broker.listener.name", "INTERNAL")]).contains("INTERNAL"));
        assert!(err(1, &[("min.insync.replicas", "0")]).contains("must be positive"));
        assert!(err(1, &[("broker.heartbeat.interval.ms", "9000")]).contains("below"));
        // A broker-only node with a voter elsewhere, and a named client listener.
        let c = parse(
            4,
            &[
                ("process.roles", "broker"),
                ("controller.quorum.voters", "1@127.0.0.1:9093"),
                (
                    "listener.security.protocol.map",
                    "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                ),
                ("listeners", "CLIENT://127.0.0.4:9092"),
                ("inter.broker.listener.name", "CLIENT"),
            ],
        )
        .unwrap();
        assert!(c.broker && !c.controller);
        assert_eq!(c.client_listener().map(|l| l.name.as_str()), Some("CLIENT"));
    }
}
