//! Local stand-ins for Docker Hub's and quay's tag APIs: the one place a stand-in is
//! right, since neither service can be reached from here. Each implements exactly the
//! documented endpoints promote and cleanup use, and acts on a real registry behind it
//! (tags are listed and deleted there), so a test checks its result in the registry.
//!
//! Docker Hub (hub.docker.com):
//! * `POST /v2/users/login/` `{"username", "password"}` -> `{"token": JWT}`
//! * `GET /v2/repositories/<ns>/<repo>/tags?page_size=N&page=P` -> `{"count", "next",
//!   "previous", "results": [{"name", "last_updated", ...}]}`, at most 100 per page
//! * `DELETE /v2/repositories/<ns>/<repo>/tags/<tag>/` with `Authorization: JWT <token>`
//!   -> 204 (404 for an unknown tag)
//!
//! Quay (`Authorization: Bearer <api token>` on every call):
//! * `GET /api/v1/repository/<ns>/<repo>/tag/?limit=N&page=P&onlyActiveTags=true` ->
//!   `{"tags": [{"name", "start_ts", "last_modified", "manifest_digest"}], "page", "has_additional"}`
//! * `DELETE /api/v1/repository/<ns>/<repo>/tag/<tag>` -> 204 (404 for an unknown tag)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::http;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Hub,
    Quay,
}

/// One request the stand-in answered: method, path (with query), `Authorization`, status.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub status: u16,
}

struct State {
    flavour: Flavour,
    /// The registry behind (plain HTTP, no auth).
    backend: String,
    username: String,
    password: String,
    api_token: String,
    issued: Vec<String>,
    /// Unix seconds each tag was last set, as the service would report it; tags not
    /// listed here report the time the stand-in first saw them.
    updated: BTreeMap<(String, String), i64>,
    seen: Vec<Seen>,
}

pub struct TagApi {
    addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

impl TagApi {
    /// A Docker Hub stand-in accepting `username`/`password` at login.
    pub fn hub(backend: &str, username: &str, password: &str) -> TagApi {
        TagApi::start(Flavour::Hub, backend, username, password, "")
    }

    /// A quay stand-in accepting the API token `token`.
    pub fn quay(backend: &str, token: &str) -> TagApi {
        TagApi::start(Flavour::Quay, backend, "", "", token)
    }

    fn start(flavour: Flavour, backend: &str, username: &str, password: &str, token: &str) -> TagApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            flavour,
            backend: backend.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            api_token: token.to_owned(),
            issued: Vec::new(),
            updated: BTreeMap::new(),
            seen: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, base) = (state.clone(), stop.clone(), format!("http://{addr}"));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, base) = (st.clone(), base.clone());
                std::thread::spawn(move || serve(conn, &st, &base));
            }
        });
        TagApi { addr, state, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Make the service report `repo:tag` as last set at `unix_secs`.
    pub fn set_updated(&self, repo: &str, tag: &str, unix_secs: i64) {
        self.state.lock().unwrap().updated.insert((repo.to_owned(), tag.to_owned()), unix_secs);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

impl Drop for TagApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request { method, path, headers, body })
}

fn serve(mut conn: TcpStream, state: &Mutex<State>, base: &str) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let Some(req) = read_request(&conn) else { return };
    let (status, body) = answer(&req, state, base);
    state.lock().unwrap().seen.push(Seen {
        method: req.method.clone(),
        path: req.path.clone(),
        authorization: req.header("authorization").map(str::to_owned),
        status,
    });
    let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
}

fn query(path: &str) -> (&str, BTreeMap<String, String>) {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let map = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (p, map)
}

fn error(status: u16, msg: &str) -> (u16, Value) {
    (status, json!({"detail": msg, "message": msg}))
}

fn answer(req: &Request, state: &Mutex<State>, base: &str) -> (u16, Value) {
    let flavour = state.lock().unwrap().flavour;
    let (path, q) = query(&req.path);
    match flavour {
        Flavour::Hub => hub(req, path, &q, state, base),
        Flavour::Quay => quay(req, path, &q, state),
    }
}

/// The tags of `repo` in the real registry, sorted, with the time each was last set.
fn backend_tags(state: &Mutex<State>, repo: &str) -> Option<Vec<(String, i64)>> {
    let backend = state.lock().unwrap().backend.clone();
    let r = http(&backend, "GET", &format!("/v2/{repo}/tags/list"), &[], b"");
    if r.status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    tags.sort();
    let mut st = state.lock().unwrap();
    let t = now();
    Some(
        tags.into_iter()
            .map(|tag| {
                let when = *st.updated.entry((repo.to_owned(), tag.clone())).or_insert(t);
                (tag, when)
            })
            .collect(),
    )
}

fn backend_delete(state: &Mutex<State>, repo: &str, tag: &str) -> (u16, Value) {
    let backend = state.lock().unwrap().backend.clone();
    let r = http(&backend, "DELETE", &format!("/v2/{repo}/manifests/{tag}"), &[], b"");
    match r.status {
        202 | 200 | 204 => (204, Value::Null),
        404 => error(404, "tag not found"),
        s => panic!("backend DELETE {repo}:{tag} answered {s}: {}", r.describe()),
    }
}

fn hub(req: &Request, path: &str, q: &BTreeMap<String, String>, state: &Mutex<State>, base: &str) -> (u16, Value) {
    if req.method == "POST" && (path == "/v2/users/login/" || path == "/v2/users/login") {
        let creds: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut st = state.lock().unwrap();
        if creds["username"] != st.username.as_str() || creds["password"] != st.password.as_str() {
            return error(401, "Incorrect authentication credentials.");
        }
        let token = format!("jwt-{}", super::unique_marker("hub"));
        st.issued.push(token.clone());
        return (200, json!({"token": token}));
    }
    let Some(rest) = path.strip_prefix("/v2/repositories/") else { return error(404, "no such endpoint") };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", [ns, repo, "tags"]) => {
            let name = format!("{ns}/{repo}");
            let Some(tags) = backend_tags(state, &name) else { return error(404, "object not found") };
            // Hub serves at most 100 per page, whatever is asked.
            let size: usize = q.get("page_size").and_then(|s| s.parse().ok()).unwrap_or(10).clamp(1, 100);
            let page: usize = q.get("page").and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
            let start = (page - 1) * size;
            let results: Vec<Value> = tags
                .iter()
                .skip(start)
                .take(size)
                .map(|(t, when)| {
                    let ts = time::OffsetDateTime::from_unix_timestamp(*when).unwrap();
                    let stamp = format!(
                        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.123456Z",
                        ts.year(), ts.month() as u8, ts.day(), ts.hour(), ts.minute(), ts.second()
                    );
                    json!({"name": t, "last_updated": stamp, "tag_status": "active"})
                })
                .collect();
            let next = (start + size < tags.len())
                .then(|| format!("{base}/v2/repositories/{name}/tags?page={}&page_size={size}", page + 1));
            (200, json!({"count": tags.len(), "next": next, "previous": null, "results": results}))
        }
        ("DELETE", [ns, repo, "tags", tag]) => {
            let ok = {
                let st = state.lock().unwrap();
                req.header("authorization")
                    .and_then(|a| a.strip_prefix("JWT "))
                    .is_some_and(|t| st.issued.iter().any(|i| i == t))
            };
            if !ok {
                return error(401, "authentication credentials were not provided or are invalid");
            }
            // The documented path ends in a slash.
            if !path.ends_with('/') {
                return error(404, "no such endpoint (the tag path ends with /)");
            }
            backend_delete(state, &format!("{ns}/{repo}"), tag)
        }
        _ => error(404, "no such endpoint"),
    }
}

fn quay(req: &Request, path: &str, q: &BTreeMap<String, String>, state: &Mutex<State>) -> (u16, Value) {
    let authorised = {
        let st = state.lock().unwrap();
        req.header("authorization").and_then(|a| a.strip_prefix("Bearer ")) == Some(st.api_token.as_str())
    };
    if !authorised {
        return error(401, "Unauthorized");
    }
    let Some(rest) = path.strip_prefix("/api/v1/repository/") else { return error(404, "no such endpoint") };
    let segs: Vec<&str> = rest.split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", [ns, repo, "tag", ""]) | ("GET", [ns, repo, "tag"]) => {
            let name = format!("{ns}/{repo}");
            let Some(tags) = backend_tags(state, &name) else { return error(404, "Not Found") };
            let limit: usize = q.get("limit").and_then(|s| s.parse().ok()).unwrap_or(50).clamp(1, 100);
            let page: usize = q.get("page").and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
            let start = (page - 1) * limit;
            let list: Vec<Value> = tags
                .iter()
                .skip(start)
                .take(limit)
                .map(|(t, when)| {
                    let ts = time::OffsetDateTime::from_unix_timestamp(*when).unwrap();
                    let stamp = ts
                        .format(&time::format_description::well_known::Rfc2822)
                        .unwrap()
                        .replace("+0000", "-0000");
                    json!({"name": t, "reversion": false, "start_ts": when, "last_modified": stamp})
                })
                .collect();
            (200, json!({"tags": list, "page": page, "has_additional": start + limit < tags.len()}))
        }
        ("DELETE", [ns, repo, "tag", tag]) if !tag.is_empty() => backend_delete(state, &format!("{ns}/{repo}"), tag),
        _ => error(404, "no such endpoint"),
    }
}
