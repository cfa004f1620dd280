//! The server serves exactly the API its OpenAPI document lists: every documented path and
//! method is answered by a handler (not 405, not the "no such path" fallback), every other
//! method on those paths is 405, and the only routes outside the document are the console's
//! page, script and style. The routers add routes only through `utoipa_axum::routes!` (see
//! `periscope_server::openapi`), which documents them; this test checks the served side.

mod common;

use common::fleet::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// One request, as raw HTTP/1.1 (any method): the status and the body when it has a length
/// (an event stream's is left unread).
fn call(server: &Server, method: &str, path: &str) -> (u16, String) {
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        server.admin
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {line:?}"));
    let mut length = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = vec![0; length.unwrap_or(0)];
    r.read_exact(&mut body).expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn the_server_serves_exactly_the_routes_its_document_lists() {
    let dir = test_dir("api-routes");
    let server = Server::start(&dir, 0);
    let (status, text) = call(&server, "GET", "/api/v1/openapi.json");
    assert_eq!(status, 200, "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the document is JSON");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 21, "only {} paths documented", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        // Path parameters filled with an id nothing has: handlers answer 404 (or 400) fast.
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "nothing" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let concrete = if path.ends_with("/source") {
            format!("{concrete}?file=main.rs")
        } else {
            concrete
        };
        for method in METHODS {
            let documented = item.get(method.to_lowercase()).is_some();
            let (status, body) = call(&server, method, &concrete);
            if documented {
                operations += 1;
                assert_ne!(status, 405, "{method} {path} is documented but not served");
                assert!(
                    !body.contains("no such path"),
                    "{method} {path} is documented but falls through: {body}"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is served ({status} {body}) but not documented"
                );
            }
        }
    }
    assert!(operations >= 24, "only {operations} operations documented");
    // Outside the document: the console, and nothing else.
    for page in ["/", "/console/app.js", "/console/app.css"] {
        assert!(paths.get(page).is_none(), "{page} is not API");
        assert_eq!(call(&server, "GET", page).0, 200, "{page}");
    }
    let (status, body) = call(&server, "GET", "/api/v1/nothing-here");
    assert_eq!(status, 404);
    assert!(body.contains("no such path"), "{body}");
}
