//! `[fleet]`: many appliances behind one PCAPs API, coordinated by etcd. The whole section is
//! optional: without it pcapd is a single appliance. Validated by `Config::validate` (errors name
//! the field); `Config::warnings` adds what is legal but probably wrong (a loopback `advertise`
//! while etcd is elsewhere: the other nodes would call themselves).
use std::net::IpAddr;

use serde::Deserialize;

use super::{invalid, literal_or_env, Config, ConfigError};

/// Smallest fleet secret (bytes): HMAC-SHA256 keys shorter than this are guessable offline.
pub const FLEET_SECRET_MIN_BYTES: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// etcd client URLs (`http://host:port` or `https://host:port`), at least one; all of one
    /// scheme.
    pub etcd: Vec<String>,
    /// How the other nodes reach this node's API listener (`http://10.0.0.5:8080`): never guessed
    /// from `api.listen`, which may be `0.0.0.0` or behind NAT.
    pub advertise: String,
    /// The secret that authenticates node-to-node calls (HMAC-SHA256), at least 16 bytes; the same
    /// on every node. Or `secret_env`: the environment variable holding it.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
}

/// The parts of an `http(s)://host:port` URL pcapd needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEndpoint {
    pub https: bool,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl HttpEndpoint {
    /// Parses `http://host:port` or `https://host:port` (a trailing `/` allowed, no path, query,
    /// or user info). The error says what is wrong, for the caller to prefix with the field.
    pub fn parse(url: &str) -> Result<HttpEndpoint, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(format!("{url:?}: give only scheme://host:port (no path, query or user)"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && (!h.contains(':') || (h.starts_with('[') && h.ends_with(']'))) => (h, p),
            _ => return Err(format!("{url:?} needs a host and a port (scheme://host:port)")),
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{url:?}: {port:?} is not a port (1 to 65535)")),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("{url:?} needs a host"));
        }
        Ok(HttpEndpoint { https, host: host.to_string(), port })
    }

    /// `localhost` or a loopback address.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost") || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl FleetConfig {
    /// The secret, from `secret` or `secret_env` (exactly one of them).
    pub fn secret(&self) -> Result<String, ConfigError> {
        literal_or_env("fleet.secret", &self.secret, &self.secret_env)?
            .ok_or_else(|| invalid("fleet.secret", "give secret or secret_env: it authenticates node-to-node calls"))
    }

    /// The advertised URL without a trailing `/`, ready for `format!("{base}{path}")`.
    pub fn advertise_base(&self) -> &str {
        self.advertise.trim_end_matches('/')
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.etcd.is_empty() {
            return Err(invalid("fleet.etcd", "give at least one etcd URL (http://host:2379)"));
        }
        let mut schemes = Vec::new();
        for (i, e) in self.etcd.iter().enumerate() {
            let ep = HttpEndpoint::parse(e).map_err(|why| invalid(format!("fleet.etcd[{i}]"), why))?;
            schemes.push(ep.https);
        }
        if schemes.iter().any(|&s| s != schemes[0]) {
            return Err(invalid("fleet.etcd", "mixes http:// and https:// endpoints; use one scheme"));
        }
        let adv = HttpEndpoint::parse(&self.advertise).map_err(|why| invalid("fleet.advertise", why))?;
        if adv.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
            return Err(invalid(
                "fleet.advertise",
                format!("{:?}: other nodes cannot call an unspecified address; give this node's own", self.advertise),
            ));
        }
        let secret = self.secret()?;
        if secret.len() < FLEET_SECRET_MIN_BYTES {
            let field = if self.secret_env.is_some() { "fleet.secret_env" } else { "fleet.secret" };
            return Err(invalid(
                field,
                format!("{} bytes is too short (at least {FLEET_SECRET_MIN_BYTES})", secret.len()),
            ));
        }
        Ok(())
    }

    /// Legal but probably wrong (printed by check-config and logged at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let adv = HttpEndpoint::parse(&self.advertise);
        let remote_etcd = self.etcd.iter().filter_map(|e| HttpEndpoint::parse(e).ok()).find(|e| !e.is_loopback());
        if let (Ok(adv), Some(etcd)) = (adv, remote_etcd) {
            if adv.is_loopback() {
                w.push(format!(
                    "fleet.advertise: {:?} is a loopback address while etcd endpoint {}:{} is not: other \
                     machines' nodes would call themselves; advertise an address they can reach",
                    self.advertise, etcd.host, etcd.port
                ));
            }
        }
        w
    }
}

impl Config {
    /// What check-config reports as warnings: legal, but probably not what was meant.
    pub fn warnings(&self) -> Vec<String> {
        self.fleet.as_ref().map(FleetConfig::warnings).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[dpdk]\nrx_cores=[1]\n[[port]]\ndevice=\"net_null0\"\n";
    const SECRET: &str = "0123456789abcdef";

    fn cfg(fleet: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(&format!("{BASE}[fleet]\n{fleet}")).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    fn err(fleet: &str) -> String {
        cfg(fleet).expect_err("should be invalid")
    }

    fn ok_fleet(etcd: &str, advertise: &str) -> String {
        format!("etcd=[{etcd}]\nadvertise=\"{advertise}\"\nsecret=\"{SECRET}\"\n")
    }

    #[test]
    fn no_fleet_section_is_a_single_appliance() {
        let c: Config = toml::from_str(BASE).unwrap();
        c.validate().unwrap();
        assert!(c.fleet.is_none());
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn a_valid_fleet_section() {
        let c = cfg(&ok_fleet("\"http://127.0.0.1:2379\", \"http://[::1]:22379/\"", "http://127.0.0.1:8081/")).unwrap();
        let f = c.fleet.unwrap();
        assert_eq!(f.secret().unwrap(), SECRET);
        assert_eq!(f.advertise_base(), "http://127.0.0.1:8081");
    }

    #[test]
    fn fleet_etcd_needs_a_url_with_host_and_port() {
        let e = err(&format!("etcd=[]\nadvertise=\"http://10.0.0.5:8080\"\nsecret=\"{SECRET}\"\n"));
        assert!(e.starts_with("fleet.etcd: give at least one"), "{e}");
        for bad in
            ["127.0.0.1:2379", "ftp://h:1", "http://h", "http://h:0", "http://h:x", "http://:2379", "http://h:1/v3"]
        {
            let e = err(&ok_fleet(&format!("\"http://127.0.0.1:2379\", \"{bad}\""), "http://10.0.0.5:8080"));
            assert!(e.starts_with("fleet.etcd[1]: "), "{bad}: {e}");
        }
        let e = err(&ok_fleet("\"http://a:1\", \"https://b:2\"", "http://10.0.0.5:8080"));
        assert!(e.starts_with("fleet.etcd: mixes"), "{e}");
        cfg(&ok_fleet("\"https://etcd.example:2379\"", "https://10.0.0.5:8080")).unwrap();
    }

    #[test]
    fn fleet_advertise_needs_an_http_url_with_a_port() {
        for bad in
            ["10.0.0.5:8080", "http://10.0.0.5", "http://10.0.0.5:8080/api", "http://0.0.0.0:8080", "http://[::]:80"]
        {
            let e = err(&ok_fleet("\"http://10.0.0.1:2379\"", bad));
            assert!(e.starts_with("fleet.advertise: "), "{bad}: {e}");
        }
        let e = err("etcd=[\"http://10.0.0.1:2379\"]\nsecret=\"0123456789abcdef\"\n");
        assert!(e.contains("missing field `advertise`"), "{e}");
    }

    #[test]
    fn fleet_secret_is_required_and_long_enough() {
        let base = "etcd=[\"http://10.0.0.1:2379\"]\nadvertise=\"http://10.0.0.5:8080\"\n";
        assert!(err(base).starts_with("fleet.secret: give secret or secret_env"), "{}", err(base));
        let e = err(&format!("{base}secret=\"short\"\n"));
        assert_eq!(e, "fleet.secret: 5 bytes is too short (at least 16)");
        let e = err(&format!("{base}secret=\"{SECRET}\"\nsecret_env=\"X\"\n"));
        assert!(e.starts_with("fleet.secret: give fleet.secret or fleet.secret_env, not both"), "{e}");
        let e = err(&format!("{base}secret_env=\"PCAPD_FLEET_SURELY_UNSET\"\n"));
        assert!(e.starts_with("fleet.secret_env: environment variable PCAPD_FLEET_SURELY_UNSET is not set"), "{e}");
        // PATH is set in every test environment and longer than 16 bytes.
        let path_len = std::env::var("PATH").unwrap().len();
        assert!(path_len >= 16);
        cfg(&format!("{base}secret_env=\"PATH\"\n")).unwrap();
        let e = err("etcd=[\"http://a:1\"]\nadvertise=\"http://b:2\"\nsecret=\"0123456789abcdef\"\nttl=3\n");
        assert!(e.contains("unknown field `ttl`"), "{e}");
    }

    #[test]
    fn loopback_advertise_with_remote_etcd_is_a_warning_not_an_error() {
        let c = cfg(&ok_fleet("\"http://127.0.0.1:2379\", \"http://10.0.0.1:2379\"", "http://127.0.0.1:8080")).unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("fleet.advertise: \"http://127.0.0.1:8080\" is a loopback address"), "{w:?}");
        assert!(w[0].contains("10.0.0.1:2379"), "{w:?}");
        let c = cfg(&ok_fleet("\"http://etcd.example:2379\"", "http://localhost:8080")).unwrap();
        assert_eq!(c.warnings().len(), 1);
        let c = cfg(&ok_fleet("\"http://etcd.example:2379\"", "http://[::1]:8080")).unwrap();
        assert_eq!(c.warnings().len(), 1);
        // Everything on one machine (tests, scripts/fleet): no warning.
        let c =
            cfg(&ok_fleet("\"http://127.0.0.1:2379\", \"http://localhost:22379\"", "http://127.0.0.1:8080")).unwrap();
        assert!(c.warnings().is_empty());
        // A reachable address with remote etcd: no warning.
        let c = cfg(&ok_fleet("\"http://10.0.0.1:2379\"", "http://10.0.0.5:8080")).unwrap();
        assert!(c.warnings().is_empty());
    }
}
