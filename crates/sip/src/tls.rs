//! SIP over TLS, client side: the trust (the system's roots plus the CA file the ini
//! names in `tlsCaFile`), the handshake with TCP_NODELAY, and a clear reason when it
//! fails ("TLS: certificate not trusted (issuer "Other CA" ...)"). The connection it
//! makes is handed to the stack as one of its own (`TlsConnection::from_client_stream`)
//! so requests and responses, ours and the registrar's, flow on it; the flows open
//! now are kept in [`TlsFlows`] so calls use the registration's connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::transport::SipAddr;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tracing::debug;

/// How long the TCP connect plus the TLS handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The local end of each TLS flow open now, by the remote's `host:port` (what a
/// request's destination says). The registration adds its connection here; calls
/// read it for their Contact.
#[derive(Clone, Default)]
pub(crate) struct TlsFlows {
    flows: Arc<Mutex<HashMap<String, SipAddr>>>,
}

impl TlsFlows {
    pub(crate) fn set(&self, remote: &SipAddr, local: SipAddr) {
        if let Ok(mut flows) = self.flows.lock() {
            flows.insert(remote.addr.to_string(), local);
        }
    }

    pub(crate) fn forget(&self, remote: &SipAddr) {
        if let Ok(mut flows) = self.flows.lock() {
            flows.remove(&remote.addr.to_string());
        }
    }

    /// Our address on the flow to `remote` (`host:port`), when one is open.
    pub(crate) fn local_for(&self, remote: &str) -> Option<SipAddr> {
        self.flows.lock().ok()?.get(remote).cloned()
    }
}

/// Why a TLS connection could not be made: the text says it for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFailure {
    /// What went wrong, starting with "TLS:".
    pub(crate) reason: String,
    /// The peer was reached but its certificate was refused (retrying soon will not
    /// help).
    pub(crate) certificate: bool,
}

impl TlsFailure {
    fn other(reason: String) -> TlsFailure {
        TlsFailure {
            reason,
            certificate: false,
        }
    }
}

/// The client side of TLS for one account: trusted roots and the rustls config.
pub(crate) struct TlsClient {
    config: Arc<ClientConfig>,
    verifier: Arc<NamingVerifier>,
}

impl TlsClient {
    /// Trusts the system's roots plus the PEM certificates in `ca_file` (when given).
    /// Fails when the CA file cannot be read or holds no certificate.
    pub(crate) fn new(ca_file: Option<&str>) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            debug!("system TLS roots: {e}");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        debug!("system TLS roots: {added} trusted, {ignored} unreadable");
        if let Some(path) = ca_file.map(str::trim).filter(|p| !p.is_empty()) {
            let pem = std::fs::read(path)
                .map_err(|e| format!("TLS: cannot read tlsCaFile {path}: {e}"))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("TLS: tlsCaFile {path} is not PEM: {e}"))?;
            if certs.is_empty() {
                return Err(format!("TLS: tlsCaFile {path} holds no certificate"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("TLS: a certificate in tlsCaFile {path}: {e}"))?;
            }
        }
        // ring, as rsipstack links it (aws-lc-rs would add a C build); rustls marks
        // it deprecated for lacking post-quantum key exchange only.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("TLS: no usable trusted roots: {e}"))?;
        let verifier = Arc::new(NamingVerifier {
            inner: webpki,
            refused_issuer: Mutex::new(None),
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
            verifier,
        })
    }

    /// Connects to `remote` and does the handshake, checking the certificate against
    /// `server_name` (a host name or an IP literal). TCP_NODELAY is set.
    pub(crate) async fn connect(
        &self,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, TlsFailure> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
            TlsFailure::other(format!("TLS: {server_name} is not a valid server name"))
        })?;
        let stream =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio::net::TcpStream::connect(remote))
                .await
                .map_err(|_| TlsFailure::other(format!("TLS: connecting to {remote} timed out")))?
                .map_err(|e| TlsFailure::other(format!("TLS: cannot connect to {remote}: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| TlsFailure::other(format!("TLS: TCP_NODELAY: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream))
            .await
            .map_err(|_| TlsFailure::other(format!("TLS: handshake with {remote} timed out")))?;
        handshake.map_err(|e| {
            let issuer = self
                .verifier
                .refused_issuer
                .lock()
                .ok()
                .and_then(|mut i| i.take());
            describe_failure(&e, server_name, issuer.as_deref(), remote)
        })
    }
}

/// Turns a failed handshake into a reason a person understands.
fn describe_failure(
    e: &std::io::Error,
    server_name: &str,
    issuer: Option<&str>,
    remote: SocketAddr,
) -> TlsFailure {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let Some(rustls::Error::InvalidCertificate(cert)) = rustls_error else {
        return TlsFailure::other(match rustls_error {
            Some(r) => format!("TLS: handshake with {remote} failed: {r}"),
            None => format!("TLS: handshake with {remote} failed: {e}"),
        });
    };
    let issuer = issuer
        .map(|i| format!("issuer \"{i}\""))
        .unwrap_or_else(|| "issuer unknown".into());
    let reason = match cert {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            format!("TLS: certificate not trusted ({issuer} is not a trusted CA; set tlsCaFile)")
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("TLS: certificate not valid for {server_name} ({issuer})")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("TLS: certificate expired ({issuer})")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("TLS: certificate not valid yet ({issuer})")
        }
        CertificateError::Revoked => format!("TLS: certificate revoked ({issuer})"),
        other => format!("TLS: certificate refused: {other:?} ({issuer})"),
    };
    TlsFailure {
        reason,
        certificate: true,
    }
}

/// rustls's own verifier, noting the issuer of a certificate it refuses so the
/// reason can name it.
#[derive(Debug)]
struct NamingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    refused_issuer: Mutex<Option<String>>,
}

impl ServerCertVerifier for NamingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if verdict.is_err() {
            if let Ok(mut issuer) = self.refused_issuer.lock() {
                *issuer = issuer_common_name(end_entity.as_ref());
            }
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The issuer's common name of a DER certificate: in the to-be-signed part the
/// issuer comes before the subject, so the first commonName attribute (OID
/// 2.5.4.3) is the issuer's. `None` when the issuer has no readable one.
fn issuer_common_name(der: &[u8]) -> Option<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = der.windows(CN_OID.len()).position(|w| w == CN_OID)? + CN_OID.len();
    let tag = *der.get(at)?;
    // UTF8String, PrintableString, IA5String, T61String
    if !matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
        return None;
    }
    let len = usize::from(*der.get(at + 1)?);
    if len >= 0x80 {
        return None;
    }
    let value = der.get(at + 2..at + 2 + len)?;
    let text = String::from_utf8_lossy(value);
    Some(text.chars().filter(|c| !c.is_control()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_is_the_first_common_name() {
        // issuer CN "Test CA", then subject CN "server"
        let mut der = vec![0x30, 0x10];
        der.extend([0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 7]);
        der.extend(b"Test CA");
        der.extend([0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 6]);
        der.extend(b"server");
        assert_eq!(issuer_common_name(&der).as_deref(), Some("Test CA"));
        assert_eq!(issuer_common_name(&[0x30, 0x00]), None);
        // cut short: no panic, no name
        assert_eq!(issuer_common_name(&der[..9]), None);
    }

    #[test]
    fn a_missing_ca_file_is_a_clear_error() {
        let err = TlsClient::new(Some("/nonexistent/ca.pem")).err();
        assert!(err
            .as_deref()
            .is_some_and(|e| e.starts_with("TLS: cannot read tlsCaFile /nonexistent/ca.pem")));
        assert!(TlsClient::new(None).is_ok());
    }
}
