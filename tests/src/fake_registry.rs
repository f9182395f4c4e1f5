//! A registry that says whatever a test tells it to: a plain HTTP/1.1 server on 127.0.0.1 in a
//! thread, answering each request from a routing function, for tests of how the client treats
//! registries it must not trust.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
};

/// One answer: status line (e.g. `200 OK`), body, content type.
pub type Answer = (&'static str, Vec<u8>, &'static str);

/// A fake registry; requests it cannot route get a 404 error envelope.
pub struct FakeRegistry {
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeRegistry {
    /// Serves until the test process ends; `route` gets each request's path (with query).
    pub fn start(route: impl Fn(&str) -> Option<Answer> + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or_default();
                seen.lock().unwrap().push(path.to_owned());
                let (status, body, kind) = route(path).unwrap_or((
                    "404 Not Found",
                    br#"{"error":{"code":"not_found","message":"no such thing"}}"#.to_vec(),
                    "application/json",
                ));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            }
        });
        Self { url, requests }
    }

    /// A registry whose every `resolve` is answered with `answer` and every blob with `blob`.
    pub fn answering(answer: serde_json::Value, blob: Vec<u8>) -> Self {
        Self::start(move |path| {
            let route = path.split('?').next().unwrap_or_default();
            if route.ends_with("/resolve") {
                Some((
                    "200 OK",
                    answer.to_string().into_bytes(),
                    "application/json",
                ))
            } else if route.contains("/blobs/") {
                Some(("200 OK", blob.clone(), "application/octet-stream"))
            } else {
                None
            }
        })
    }

    /// The paths asked for so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    pub fn asked_for_a_blob(&self) -> bool {
        self.requests().iter().any(|p| p.contains("/blobs/"))
    }
}
