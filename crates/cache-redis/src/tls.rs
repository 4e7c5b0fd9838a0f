//! The TLS client configuration (feature `tls`): rustls with the `ring` provider.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use fred::types::config::{HostMapping, TlsConfig, TlsConnector, TlsHostMapping};
use palisade_cache_core::Error;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsOptions;

/// Every node of a cluster is checked against the one configured server name.
#[derive(Debug)]
struct FixedName(String);

impl HostMapping for FixedName {
    fn map(&self, _: &IpAddr, _: &str) -> Option<String> {
        Some(self.0.clone())
    }
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bad = |e: rustls::pki_types::pem::Error| {
        Error::config(format!("cannot read the {what} file {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(bad)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "the {what} file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn roots(opts: &TlsOptions) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match &opts.ca_file {
        Some(path) => {
            for cert in certs(path, "CA")? {
                store.add(cert).map_err(|e| {
                    Error::config(format!(
                        "the CA file {} holds a certificate rustls refuses: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // One unusable platform certificate does not make the others useless.
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(Error::config(
                    "no trusted root certificate was found on this platform: set a CA file \
                     (PALISADE_REDIS_CA_FILE)",
                ));
            }
        }
    }
    Ok(store)
}

/// The rustls client configuration for `opts`.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?
        .with_root_certificates(roots(opts)?);
    match (&opts.client_cert_file, &opts.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::config(format!("cannot read the client key file {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::config(format!("the client certificate and key do not work together: {e}")))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(Error::config(
            "mutual TLS needs both a client certificate file and a client key file",
        )),
    }
}

/// fred's TLS settings for `opts`.
pub(crate) fn fred_tls(opts: &TlsOptions) -> Result<TlsConfig, Error> {
    let config = client_config(opts)?;
    Ok(TlsConfig {
        connector: TlsConnector::from(config),
        hostnames: match &opts.server_name {
            Some(name) => TlsHostMapping::Custom(Arc::new(FixedName(name.clone()))),
            None => TlsHostMapping::None,
        },
    })
}
