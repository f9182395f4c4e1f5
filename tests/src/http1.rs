//! A minimal HTTP/1.1 client on one kept-alive connection, for benchmarks that need many
//! small requests without a client library's overhead in the figures: requests with a body
//! and headers, responses with `Content-Length` (what the node sends for its API).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
};

/// One connection to `host:port`.
pub struct Connection {
    host: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    key: Option<String>,
}

/// A response: status code and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Connection {
    /// Connects to a node's `http://host:port` URL; `key` goes in every request.
    pub fn open(url: &str, key: Option<&str>) -> Self {
        let host = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let stream = TcpStream::connect(&host).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            host,
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            key: key.map(str::to_owned),
        }
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], &[])
    }

    /// Sends one request and reads its whole response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if let Some(key) = &self.key {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.writer.write_all(head.as_bytes()).unwrap();
        self.writer.write_all(body).unwrap();
        self.read_response()
    }

    fn read_response(&mut self) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"));
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
                assert!(
                    !(name.eq_ignore_ascii_case("transfer-encoding")),
                    "chunked responses are not supported by this client"
                );
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).unwrap();
        Response { status, body }
    }
}
