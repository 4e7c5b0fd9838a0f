//! Test certificates, generated at run time (no private key is ever committed).
//!
//! [`TlsFiles::generate`] writes PEM files into a fresh temporary directory:
//!
//! - `ca.pem` — a test CA;
//! - `server.pem` / `server.key` — signed by it, for `localhost`, `127.0.0.1` and `::1`;
//! - `client.pem` / `client.key` — a client certificate signed by it (mutual TLS);
//! - `expired.pem` / `expired.key` — like the server's, expired in 2001;
//! - `wrong-name.pem` / `wrong-name.key` — signed by the CA for `other.invalid` only;
//! - `other-ca.pem` — a CA that signed none of them.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use tempfile::TempDir;

/// A set of test certificates on disk. Dropping it removes the files.
pub struct TlsFiles {
    dir: TempDir,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn ca_params(name: &str) -> io::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

fn leaf_params(dns: &[&str], ips: &[IpAddr], client: bool) -> io::Result<CertificateParams> {
    let mut p = CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(other)?;
    p.distinguished_name
        .push(DnType::CommonName, dns.first().copied().unwrap_or("palisade-test"));
    p.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    // A node's certificate is also its client certificate on the cluster bus and in
    // replication (`tls-cluster`, `tls-replication`): it serves both purposes.
    p.extended_key_usages = if client {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
    };
    Ok(p)
}

impl TlsFiles {
    /// Generates every file (see the module docs).
    pub fn generate() -> io::Result<TlsFiles> {
        let dir = tempfile::Builder::new().prefix("palisade-tls-").tempdir()?;
        let write = |name: &str, text: String| fs::write(dir.path().join(name), text);

        let ca_key = KeyPair::generate().map_err(other)?;
        let ca = ca_params("palisade test CA")?.self_signed(&ca_key).map_err(other)?;
        write("ca.pem", ca.pem())?;

        let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
        let leaf = |name: &str, params: CertificateParams| -> io::Result<()> {
            let key = KeyPair::generate().map_err(other)?;
            let cert = params.signed_by(&key, &ca, &ca_key).map_err(other)?;
            write(&format!("{name}.pem"), cert.pem())?;
            write(&format!("{name}.key"), key.serialize_pem())
        };
        leaf("server", leaf_params(&["localhost"], &loopback, false)?)?;
        leaf("client", leaf_params(&["palisade-client"], &[], true)?)?;
        let mut expired = leaf_params(&["localhost"], &loopback, false)?;
        expired.not_before = rcgen::date_time_ymd(2000, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2001, 1, 1);
        leaf("expired", expired)?;
        leaf("wrong-name", leaf_params(&["other.invalid"], &[], false)?)?;

        let other_key = KeyPair::generate().map_err(other)?;
        let other_ca = ca_params("an unrelated CA")?.self_signed(&other_key).map_err(other)?;
        write("other-ca.pem", other_ca.pem())?;
        Ok(TlsFiles { dir })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `name` (e.g. `ca.pem`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The test CA.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// The client certificate and key (mutual TLS).
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (self.path("client.pem"), self.path("client.key"))
    }
}

/// Which certificate a TLS server presents, and whether it asks for a client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerCert {
    /// Valid for `localhost`, `127.0.0.1`, `::1`.
    Good,
    /// Expired.
    Expired,
    /// For `other.invalid` only.
    WrongName,
}

impl ServerCert {
    fn stem(self) -> &'static str {
        match self {
            ServerCert::Good => "server",
            ServerCert::Expired => "expired",
            ServerCert::WrongName => "wrong-name",
        }
    }
}

/// How a [`RedisServer`](crate::server::RedisServer) speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsServer {
    /// The certificate it presents.
    pub cert: ServerCert,
    /// `tls-auth-clients yes`: a client must present a certificate signed by the CA.
    pub mutual: bool,
}

impl TlsServer {
    /// A valid certificate, no client certificate asked for.
    pub fn good() -> Self {
        TlsServer {
            cert: ServerCert::Good,
            mutual: false,
        }
    }

    /// The `redis-server` arguments for a TLS port `port`.
    pub fn args(&self, files: &TlsFiles, port: u16) -> Vec<String> {
        let stem = self.cert.stem();
        let p = |name: String| files.path(&name).display().to_string();
        vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            p(format!("{stem}.pem")),
            "--tls-key-file".into(),
            p(format!("{stem}.key")),
            "--tls-ca-cert-file".into(),
            p("ca.pem".into()),
            "--tls-auth-clients".into(),
            if self.mutual { "yes" } else { "no" }.into(),
        ]
    }
}
