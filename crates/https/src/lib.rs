//! The HTTPS client every HTTP adapter of Homeroom calls its provider with, built one way
//! so that they all speak TLS alike: rustls with the ring provider and Mozilla's roots
//! (no system OpenSSL, and no process-wide crypto provider to install), and one timeout that bounds both the connection and the whole
//! request, so a provider that hangs counts as unavailable.

use std::sync::Arc;
use std::time::Duration;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The TLS configuration was refused (no usable protocol version).
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A client whose requests give up after `timeout`, connecting included.
///
/// # Errors
/// [`SetupError`] when TLS or the client cannot be set up.
pub fn client(timeout: Duration) -> Result<reqwest::Client, SetupError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(SetupError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_to_a_server_that_never_answers_gives_up_after_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let http = client(Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let answer = http.get(&url).send().await;
        assert!(answer.is_err_and(|e| e.is_timeout()));
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(listener);
    }
}
