//! An HTTPS fault server with a self-signed certificate nobody trusts, for what the plain-HTTP fault server
//! cannot show: which TLS settings a request to another host is sent with. Every request that got past the
//! handshake is recorded, so an empty record means the client refused the certificate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::Request as HttpRequest;

use super::http::{Request, Response};

pub struct TlsServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    handle: axum_server::Handle<SocketAddr>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

impl TlsServer {
    /// Serves HTTPS on `ip`:0 with a fresh self-signed certificate for `ip`, until dropped.
    pub async fn start(ip: &str, handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        super::install_crypto();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![ip.to_string()]).unwrap().self_signed(&key).unwrap();
        let config =
            axum_server::tls_rustls::RustlsConfig::from_pem(cert.pem().into_bytes(), key.serialize_pem().into_bytes())
                .await
                .unwrap();
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let recorded = requests.clone();
        let handler = Arc::new(handler);
        let app = axum::Router::new().fallback(move |req: HttpRequest<Body>| {
            let (recorded, handler) = (recorded.clone(), handler.clone());
            async move {
                let request = Request {
                    method: req.method().to_string(),
                    target: req.uri().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                        .collect(),
                };
                recorded.lock().unwrap().push(request.clone());
                let Response { status, headers, body } = handler(&request);
                let mut out = axum::http::Response::builder().status(status);
                for (k, v) in headers {
                    out = out.header(k, v);
                }
                out.body(Body::from(body)).unwrap()
            }
        });
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, config).unwrap().handle(handle.clone());
        tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        Self { addr, requests, handle }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn recorded(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}
